"""A small OpenAI-compatible server that misbehaves on purpose, for the LLM client's fault tests.

It serves `GET /v1/models` and `POST /v1/chat/completions` on 127.0.0.1 (stdlib only, one thread a
request). A normal reply's content is the JSON object `{"answer": "echo:<prompt>"}` with made-up
token counts. Faults are drawn per request from a seeded RNG over (seed, prompt, how many times the
prompt was seen), so a run's faults do not depend on thread timing and a retry may succeed:

    500         HTTP 500 with an error body
    429         HTTP 429 with `Retry-After: <retry_after>` seconds
    timeout     sleeps `timeout_sleep` seconds (past the client's timeout) before answering
    truncated   HTTP 200 whose body is cut off mid-JSON (a broken response, not a model reply)
    bad_json    HTTP 200, a well-formed response whose *content* is truncated JSON
    wrong       HTTP 200, content is valid JSON with the wrong fields

A prompt can force its fate with a tag: `[[always:500]]` (every attempt), `[[once:429]]` (the first
attempt only), `[[always:timeout]]`, `[[always:400]]`, `[[ok]]` (never a fault). A model other than
`model` gets a 404, as OpenAI answers; with `api_key` set, any other key gets a 401.
Every request is logged (prompt, start/end times, outcome) so tests can count what reached it.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("500", "429", "timeout", "truncated", "bad_json", "wrong")
_TAG = re.compile(r"\[\[(always|once):([a-z0-9_]+)\]\]|\[\[ok\]\]")


class FaultServer:
    def __init__(self, *, seed: int = 0, fault_rate: float = 0.3, faults: tuple[str, ...] = FAULTS,
                 retry_after: float = 1.0, timeout_sleep: float = 1.5, delay_s: float = 0.0,
                 api_key: str | None = None, reject_response_format: bool = False,
                 model: str = "fault-model"):
        self.seed, self.fault_rate, self.faults = seed, fault_rate, faults
        self.retry_after, self.timeout_sleep, self.delay_s = retry_after, timeout_sleep, delay_s
        self.api_key, self.reject_response_format, self.model = api_key, reject_response_format, model
        self.log: list[dict] = []
        self.models_calls = 0
        self.inflight = 0
        self.max_inflight = 0
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> "FaultServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- what the tests read -------------------------------------------------------------------
    def requests_for(self, needle: str) -> list[dict]:
        with self._lock:
            return [e for e in self.log if needle in e["prompt"]]

    def chat_requests(self) -> int:
        with self._lock:
            return len(self.log)

    # ---- deciding a request's fate -------------------------------------------------------------
    def _outcome(self, prompt: str, body: dict) -> str:
        with self._lock:
            n = self._seen.get(prompt, 0)
            self._seen[prompt] = n + 1
        if self.reject_response_format and "response_format" in body:
            return "reject_rf"
        m = _TAG.search(prompt)
        if m:
            if m.group(0) == "[[ok]]":
                return "ok"
            mode, fault = m.group(1), m.group(2)
            return fault if mode == "always" or n == 0 else "ok"
        digest = hashlib.blake2b(f"{self.seed}|{prompt}|{n}".encode(), digest_size=8).digest()
        rng = random.Random(int.from_bytes(digest, "big"))
        return rng.choice(self.faults) if rng.random() < self.fault_rate else "ok"

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, payload, headers: dict | None = None, raw: bytes | None = None):
                data = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _authorised(self) -> bool:
                if server.api_key is None:
                    return True
                if self.headers.get("Authorization") == f"Bearer {server.api_key}":
                    return True
                self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                           "code": "invalid_api_key"}})
                return False

            def do_GET(self):
                if not self._authorised():
                    return
                if self.path.rstrip("/") == "/v1/models":
                    with server._lock:
                        server.models_calls += 1
                    self._send(200, {"object": "list", "data": [
                        {"id": server.model, "object": "model", "owned_by": "tests"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self._authorised():
                    return
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": "not found"}})
                    return
                if body.get("model") not in (None, server.model):  # as OpenAI does for an unknown model
                    self._send(404, {"error": {"message": f"The model {body.get('model')} does not exist",
                                               "type": "invalid_request_error", "code": "model_not_found"}})
                    return
                messages = body.get("messages") or [{}]
                prompt = str(messages[-1].get("content", ""))
                outcome = server._outcome(prompt, body)
                entry = {"prompt": prompt, "outcome": outcome, "start": time.monotonic(), "body": body}
                with server._lock:
                    server.log.append(entry)
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                try:
                    if server.delay_s:
                        time.sleep(server.delay_s)
                    self._answer(outcome, prompt, body)
                finally:
                    entry["end"] = time.monotonic()
                    with server._lock:
                        server.inflight -= 1

            def _answer(self, outcome: str, prompt: str, body: dict):
                if outcome == "500":
                    self._send(500, {"error": {"message": "injected server error", "type": "server_error"}})
                elif outcome == "429":
                    self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                               headers={"Retry-After": f"{server.retry_after:g}"})
                elif outcome == "400":
                    self._send(400, {"error": {"message": "injected bad request", "type": "invalid_request_error"}})
                elif outcome == "reject_rf":
                    self._send(400, {"error": {"message": "response_format is not supported",
                                               "type": "invalid_request_error", "param": "response_format"}})
                else:
                    if outcome == "timeout":
                        time.sleep(server.timeout_sleep)
                    content = json.dumps({"answer": f"echo:{prompt}"})
                    if outcome == "bad_json":
                        content = content[: len(content) // 2]
                    elif outcome == "wrong":
                        content = json.dumps({"unexpected": 1, "other": "field"})
                    payload = {
                        "id": "chatcmpl-fault", "object": "chat.completion", "created": int(time.time()),
                        "model": body.get("model") or server.model,
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": content}}],
                        "usage": {"prompt_tokens": len(prompt.split()) + 3, "completion_tokens": 7,
                                  "total_tokens": len(prompt.split()) + 10},
                    }
                    data = json.dumps(payload).encode()
                    if outcome == "truncated":
                        data = data[: len(data) // 2]
                    self._send(200, None, raw=data)

        return Handler


if __name__ == "__main__":  # handy by hand: python tests/fault_server.py
    srv = FaultServer().start()
    print(srv.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()
