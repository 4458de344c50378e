"""The LLM client: every LLM call in Assay goes through here.

One code path for every endpoint: the `openai` client against any OpenAI-compatible server (OpenAI,
vLLM, Ollama, a llama.cpp server). With no endpoint configured, the client starts the embedded
llama.cpp server (core/llm/server.py) and stops it afterwards.

A generator hands over a batch, like a distilabel task (build the prompt from a row, parse the
reply into columns):

    client = LLMClient(LLMConfig(max_tokens=64, temperature=0, seed=1))
    results = client.run_batch("gen-2024-05-01", [
        Request(key=row_id, messages=[{"role": "user", "content": prompt}], parse=json_parser("answer"))
        for row_id, prompt in rows], store)

Each Result holds the value (or the error), the raw reply, attempts and tokens; a failure is data,
never an exception. The run is journalled in the workspace (core/llm/journal.py): re-running a killed
run with the same run id sends only what had not finished, and identical deterministic requests are
answered from the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import jobs
from ..errors import AssayError
from ..progress import progress
from .config import LLMConfig
from .journal import FINISHED, Journal, check_run_id
from .pacing import MAX_RETRY_AFTER_S, RateLimiter, retry_after_seconds
from .parsing import ParseError, parse_json
from .server import EMBEDDED_MODEL, LlamaServer

# what to send when there is no key: local servers (llama.cpp, vLLM, Ollama) accept anything, but
# the openai client insists on a non-empty string
NO_KEY = "sk-no-key"

# error kinds a Result (and the journal) can carry
TRANSPORT_KINDS = ("http", "timeout", "connection", "bad_response")
PARSE_KINDS = ("unparsable", "off_schema", "parse")


@dataclass
class Request:
    """One call in a batch. `key` names it within the run (a resume skips finished keys); `params`
    override the config's sampling parameters (any OpenAI chat parameter: stop, seed, ...); `parse`
    turns the reply text into a value and raises to reject it (the raw reply is kept)."""

    key: str
    messages: list[dict[str, Any]] | str
    params: dict[str, Any] = field(default_factory=dict)
    parse: Callable[[str], Any] | None = None


@dataclass
class Result:
    key: str
    ok: bool
    value: Any = None
    raw: str | None = None
    error: str | None = None
    error_kind: str | None = None  # http | timeout | connection | bad_response | unparsable | off_schema | parse
    attempts: int = 0  # requests sent for this key, across resumed sessions; 0 when cached
    tokens_in: int = 0
    tokens_out: int = 0
    cached: bool = False  # answered from the workspace cache, no request sent
    resumed: bool = False  # finished in an earlier session of the run, taken from its journal
    finish_reason: str | None = None
    attempt_log: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


def _short(text: str | None, limit: int = 300) -> str:
    text = (text or "").strip().replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- the client ----------------------------------------------------------------------------------
@dataclass
class _Item:
    request: Request
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    request_hash: str
    request_json: str
    cacheable: bool
    prior_attempts: int = 0


# the openai SDK's keyword parameters; anything else in Request.params travels in extra_body
_SDK_PARAMS = {"temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "stop", "n",
               "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
               "response_format", "tools", "tool_choice", "user", "reasoning_effort"}


class LLMClient:
    """Calls an OpenAI-compatible endpoint for a batch of requests, journalled in a workspace.

    Use it as a context manager to keep the embedded server (when no base_url is configured) up
    across several batches; otherwise each `run_batch` starts it when it has requests to send and
    stops it before returning."""

    def __init__(self, config: LLMConfig | None = None):
        self.config = (config or LLMConfig()).validate()
        self.base_url: str | None = self.config.base_url
        self.model: str | None = self.config.model
        self._openai = None
        self._server = None
        self._in_context = False
        self._json_supported = True
        self._limiter = RateLimiter(self.config.rpm)

    # ---- endpoint ----------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return self.base_url or "embedded"

    def _api_key(self) -> str:
        return os.environ.get(self.config.api_key_env) or NO_KEY

    def connect(self) -> None:
        """Start the embedded server if needed, then probe the endpoint: an unreachable endpoint, a
        rejected API key or an unknown model is an AssayError here, before any work starts."""
        if self._openai is not None:
            return
        import openai

        if self.base_url is None:
            self._server = LlamaServer(self.config.server_model, n_threads=self.config.server_threads).start()
            self.base_url = self._server.base_url
            self.model = self.model or EMBEDDED_MODEL
        client = openai.OpenAI(base_url=self.base_url, api_key=self._api_key(), max_retries=0,
                               timeout=self.config.timeout_s)
        try:
            self._probe(client)
        except BaseException:
            self.close()
            raise
        self._openai = client

    def _probe(self, client) -> None:
        import openai

        quick = client.with_options(timeout=min(15.0, self.config.timeout_s), max_retries=0)
        listed: list[str] | None = None
        try:
            listed = [m.id for m in quick.models.list().data]
        except openai.NotFoundError:
            listed = None  # an endpoint without /models: the 1-token request below decides
        except openai.APIError as exc:
            raise self._probe_error(exc) from exc
        if listed is not None and self.model is None:
            if not listed:
                raise AssayError(f"the LLM endpoint {self.base_url} lists no models; set the model name")
            self.model = listed[0]
        if listed is None or self.model not in listed:
            if self.model is None:
                raise AssayError(f"the LLM endpoint {self.base_url} cannot list its models; set the model name")
            try:  # some endpoints serve names they do not list (aliases); ask for one token to be sure
                quick.chat.completions.create(model=self.model, max_tokens=1,
                                              messages=[{"role": "user", "content": "ping"}])
            except openai.APIError as exc:
                hint = f" (it lists: {', '.join(listed[:10])})" if listed else ""
                raise self._probe_error(exc, hint) from exc

    def _probe_error(self, exc, hint: str = "") -> AssayError:
        import openai

        url = self.base_url
        if isinstance(exc, openai.APIConnectionError):  # timeouts included
            cause = exc.__cause__ or exc
            return AssayError(f"cannot reach the LLM endpoint {url}: {_short(str(cause), 160) or type(cause).__name__}"
                              " (is the server running? `assay llm serve` starts a local one, or leave the"
                              " base URL unset to use the embedded server)")
        status = getattr(exc, "status_code", None)
        if status in (401, 403):
            env = self.config.api_key_env
            where = f"${env}" + ("" if os.environ.get(env) else ", which is not set")
            return AssayError(f"the LLM endpoint {url} rejected the API key (HTTP {status}; key from {where})")
        if status == 404:
            return AssayError(f"the LLM endpoint {url} does not serve model {self.model!r}{hint}")
        return AssayError(f"the LLM endpoint {url} failed a probe request (HTTP {status}): "
                          f"{_short(getattr(exc, 'message', str(exc)), 200)}{hint}")

    def close(self) -> None:
        if self._openai is not None:
            self._openai.close()
            self._openai = None
        if self._server is not None:
            self._server.stop()
            self._server = None
            self.base_url = self.config.base_url

    def __enter__(self) -> "LLMClient":
        self._in_context = True
        return self

    def __exit__(self, *exc) -> None:
        self._in_context = False
        self.close()

    # ---- requests -----------------------------------------------------------------------------
    def _model_name(self) -> str:
        if self.model is None:
            if self.base_url is None:
                return EMBEDDED_MODEL
            self.connect()  # the endpoint names its model: needs the endpoint, even for cached work
        return self.model

    def _prepare(self, req: Request, model: str) -> _Item:
        c = self.config
        messages = [{"role": "user", "content": req.messages}] if isinstance(req.messages, str) else list(req.messages)
        params: dict[str, Any] = {"temperature": c.temperature, "top_p": c.top_p, "max_tokens": c.max_tokens,
                                  "seed": c.seed}
        params.update(req.params)
        params = {k: v for k, v in sorted(params.items()) if v is not None}
        body = {"model": model, "messages": messages, "params": params, "json_mode": c.json_mode}
        canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
        digest = hashlib.blake2b(canonical.encode("utf-8"), digest_size=16).hexdigest()
        # a sampled reply without a seed is one draw among many: serving it again would make five
        # "samples" of one prompt identical, so only deterministic requests are cached
        cacheable = c.cache and (params.get("temperature", 1) == 0 or "seed" in params)
        return _Item(req, messages, params, digest, canonical, cacheable)

    def _interpret(self, item: _Item, raw: str) -> tuple[bool, Any, str | None, str | None]:
        """(ok, value, error, error_kind) for a reply text."""
        parse = item.request.parse
        if parse is None and self.config.json_mode:
            parse = parse_json
        if parse is None:
            return True, raw, None, None
        try:
            return True, parse(raw), None, None
        except ParseError as exc:
            return False, None, str(exc), exc.kind
        except Exception as exc:  # the task's own parser rejected it: still data, with the raw reply
            return False, None, f"{type(exc).__name__}: {exc}", "parse"

    def run_batch(self, run_id: str, requests: list[Request], store, *, retry_failed: bool = False,
                  show_progress: bool | None = None) -> list[Result]:
        """Run `requests` as (part of) run `run_id`, journalled in `store`; returns one Result per
        request, in order. Keys finished in an earlier session of the run are not sent again (their
        journalled replies are re-parsed with this batch's `parse`); `retry_failed` sends the failed
        ones again. Cached replies answer identical deterministic requests without the endpoint."""
        check_run_id(run_id)
        keys = [r.key for r in requests]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise AssayError(f"run {run_id!r}: request key {dup!r} appears more than once in the batch")
        journal = Journal(store)
        try:
            model = self._model_name()
            items = [self._prepare(r, model) for r in requests]
            previous = journal.calls(run_id, keys)
            results: dict[str, Result] = {}
            updates: list[Result] = []  # outcomes known without a request, to journal
            todo: list[_Item] = []
            for item in items:
                row = previous.get(item.request.key)
                if row is not None and row["request_hash"] != item.request_hash:
                    raise AssayError(f"run {run_id!r}: key {item.request.key!r} was journalled with a different "
                                     "request (prompt, model or parameters changed); use a new run id")
                if row is not None and row["status"] in FINISHED and not (retry_failed and row["status"] == "failed"):
                    res = self._from_journal(item, row)
                    results[item.request.key] = res
                    if res.ok != (row["status"] == "ok") or res.error != row["error"]:
                        updates.append(res)  # re-parsed differently: record it
                    continue
                item.prior_attempts = row["attempts"] if row is not None else 0
                todo.append(item)
            if todo and self.config.cache:
                hits = journal.cache_lookup(i.request_hash for i in todo if i.cacheable)
                rest = []
                for item in todo:
                    hit = hits.get(item.request_hash) if item.cacheable else None
                    if hit is None:
                        rest.append(item)
                        continue
                    ok, value, error, kind = self._interpret(item, hit["raw"])
                    res = Result(item.request.key, ok, value, hit["raw"], error, kind, item.prior_attempts,
                                 hit["tokens_in"], hit["tokens_out"], cached=True, finish_reason=hit["finish_reason"])
                    results[item.request.key] = res
                    updates.append(res)
                todo = rest
            if todo:
                self.connect()  # probe before anything is written: a bad endpoint leaves no trace
            writer = journal.open_run(
                run_id, endpoint=self.config.base_url or "embedded", model=model, params=self._record_params(),
                new_calls=[(i.request.key, i.request_hash, i.request_json) for i in items
                           if i.request.key not in previous])
            status = "interrupted"
            try:
                for res in updates:
                    self._journal_done(writer, res.key, res, None)
                self._execute(todo, writer, results, show_progress)
                status = "done"
            finally:
                writer.close(status, self._record_params())
        finally:
            if not self._in_context:
                self.close()
        return [results[k] for k in keys]

    def _record_params(self) -> dict[str, Any]:
        params = self.config.to_dict()
        params["json_supported"] = self._json_supported
        return params

    def _from_journal(self, item: _Item, row: dict) -> Result:
        log = json.loads(row["attempt_log"]) if row["attempt_log"] else []
        common = dict(attempts=row["attempts"], tokens_in=row["tokens_in"], tokens_out=row["tokens_out"],
                      cached=bool(row["cached"]), resumed=True, finish_reason=row["finish_reason"], attempt_log=log)
        if row["status"] == "failed" and row["error_kind"] not in PARSE_KINDS:
            return Result(item.request.key, False, None, row["raw"], row["error"], row["error_kind"], **common)
        ok, value, error, kind = self._interpret(item, row["raw"] or "")
        return Result(item.request.key, ok, value, row["raw"], error, kind, **common)

    @staticmethod
    def _journal_done(writer, key: str, res: Result, cache_entry, latency: float | None = None) -> None:
        writer.done(key, ok=res.ok, attempts=res.attempts, raw=res.raw, error=res.error, error_kind=res.error_kind,
                    attempt_log=res.attempt_log, tokens_in=res.tokens_in, tokens_out=res.tokens_out,
                    cached=res.cached, latency_s=latency, finish_reason=res.finish_reason, cache_entry=cache_entry)

    def _execute(self, todo: list[_Item], writer, results: dict[str, Result], show_progress: bool | None) -> None:
        """Send `todo` from `concurrency` worker threads; each outcome goes to the journal as it lands."""
        if not todo:
            return
        lock = threading.Lock()
        pending = list(reversed(todo))
        done_count = [0]
        failure: list[BaseException] = []
        stop = threading.Event()

        def worker() -> None:
            while not stop.is_set():
                with lock:
                    if not pending:
                        return
                    item = pending.pop()
                try:
                    t0 = time.monotonic()
                    res = self._call(item, writer, stop)
                    if res is None:  # stopped while waiting to retry
                        return
                    # a reply is cached even when the parser rejected it: the reply is what the model
                    # said; a fixed parser reads it again. Transport failures are never cached.
                    cache = ((item.request_hash, self.model) if item.cacheable and res.raw is not None
                             and res.error_kind not in TRANSPORT_KINDS else None)
                    self._journal_done(writer, item.request.key, res, cache, time.monotonic() - t0)
                    with lock:
                        results[item.request.key] = res
                        done_count[0] += 1
                except BaseException as exc:  # a bug, not a failed call: stop everything and raise it
                    failure.append(exc)
                    stop.set()
                    return

        threads = [threading.Thread(target=worker, name=f"llm-{i}", daemon=True)
                   for i in range(min(self.config.concurrency, len(todo)))]
        for t in threads:
            t.start()
        try:
            with progress("LLM requests", total=len(todo), enabled=show_progress) as bar:
                seen = 0
                alive = threads
                while alive:
                    alive[0].join(0.1)
                    alive = [t for t in threads if t.is_alive()]
                    with lock:
                        now = done_count[0]
                        failed_now = sum(1 for r in results.values() if not r.ok) if now > seen else 0
                        ok_now = len(results) - failed_now
                    if now > seen:
                        # live ok/failed counts for the app's job view (a no-op outside a job)
                        jobs.report(ok=ok_now, failed=failed_now)
                        bar.advance(now - seen)
                        seen = now
        except BaseException:
            stop.set()  # Ctrl-C: workers finish the request in hand; what landed stays journalled
            raise
        if failure:
            raise failure[0]

    def _call(self, item: _Item, writer, stop: threading.Event) -> Result | None:
        """Send one request, with retries; returns its Result (failures included)."""
        import openai

        c = self.config
        attempts = item.prior_attempts
        log: list[str] = []
        retries = 0
        while True:
            self._limiter.acquire()
            if stop.is_set():
                return None
            kwargs = dict(item.params)
            use_json = c.json_mode and self._json_supported and "response_format" not in kwargs
            if use_json:
                kwargs["response_format"] = {"type": "json_object"}
            extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in _SDK_PARAMS}
            attempts += 1
            writer.sent(item.request.key, attempts)
            body_text: str | None = None
            retry_after: float | None = None
            try:
                raw_resp = self._openai.chat.completions.with_raw_response.create(
                    model=self.model, messages=item.messages, extra_body=extra or None, **kwargs)
                body_text = raw_resp.http_response.text
                completion = raw_resp.parse()
                choice = completion.choices[0]
                content = choice.message.content or ""
            except openai.APIStatusError as exc:
                status = exc.status_code
                body_text = exc.response.text
                if (status == 400 and use_json and "response_format" in (body_text or "")
                        and self._json_supported):
                    # the endpoint has no JSON mode: drop it for the rest of the run (the tolerant
                    # parser still reads JSON out of the replies) and resend at once, no retry spent
                    self._json_supported = False
                    log.append(f"attempt {attempts}: HTTP 400, endpoint rejects response_format; resent without it")
                    continue
                kind, error = "http", f"HTTP {status}: {_short(getattr(exc, 'message', None) or body_text, 200)}"
                retryable = status in (408, 409, 429) or status >= 500
                retry_after = retry_after_seconds(exc.response.headers)
            except openai.APITimeoutError:
                kind, error, retryable = "timeout", f"no reply within {c.timeout_s:g}s", True
            except openai.APIConnectionError as exc:
                kind, error, retryable = "connection", _short(str(exc.__cause__ or exc), 200), True
            except (ValueError, IndexError, AttributeError, openai.APIResponseValidationError) as exc:
                # HTTP 200 but not a chat completion (truncated or malformed body, no choices)
                kind, error, retryable = "bad_response", f"malformed response: {_short(str(exc), 200)}", True
            else:
                ok, value, error, kind = self._interpret(item, content)
                usage = completion.usage
                return Result(item.request.key, ok, value, content, error, kind, attempts,
                              getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0,
                              finish_reason=choice.finish_reason, attempt_log=log)
            if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
                error += f" (Retry-After {retry_after:.0f}s is too long to wait)"
                retryable = False
            log.append(f"attempt {attempts}: {kind}: {error}" + (f" (Retry-After {retry_after:g}s)"
                                                                 if retry_after is not None else ""))
            if not retryable or retries >= c.max_retries:
                return Result(item.request.key, False, None, body_text, error, kind, attempts, attempt_log=log)
            retries += 1
            if retry_after is not None:
                self._limiter.pause(retry_after)  # every worker holds off: the endpoint asked for quiet
            else:
                delay = c.backoff_s * (2 ** (retries - 1)) * random.uniform(0.8, 1.2)
                if stop.wait(min(delay, 60.0)):
                    return None
