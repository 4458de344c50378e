"""The LLM client against a server that fails on purpose (tests/fault_server.py): retries, Retry-After,
timeouts, broken and off-schema replies, bad endpoints and keys, and resuming a SIGKILLed run."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from fault_server import FAULTS, FaultServer

from assay.core.errors import AssayError
from assay.core.llm import LLMClient, LLMConfig, Request, json_parser
from assay.core.llm.journal import list_llm_runs, run_calls, run_failures, run_record
from assay.core.llm.server import free_port

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def fault():
    servers = []

    def make(**kw) -> FaultServer:
        servers.append(FaultServer(**kw).start())
        return servers[-1]

    yield make
    for s in servers:
        s.stop()


def config(server: FaultServer, **kw) -> LLMConfig:
    base = dict(base_url=server.base_url, model=server.model, temperature=0, seed=1, timeout_s=0.5,
                max_retries=2, backoff_s=0.02, concurrency=4)
    return LLMConfig(**{**base, **kw})


def answer(prompt: str) -> dict:
    return {"answer": f"echo:{prompt}"}


def test_fault_mix_completes_and_records_every_failure(fault, store):
    srv = fault(seed=3, fault_rate=0.3, retry_after=0.2, timeout_sleep=0.8)
    forced = {"f500": "[[always:500]] a", "f400": "[[always:400]] b", "ftimeout": "[[always:timeout]] c",
              "ftrunc": "[[always:truncated]] d", "fbadjson": "[[always:bad_json]] e", "fwrong": "[[always:wrong]] f"}
    prompts = {f"k{i}": f"question number {i}" for i in range(40)} | forced
    requests = [Request(k, p, parse=json_parser("answer")) for k, p in prompts.items()]
    cfg = config(srv)
    results = LLMClient(cfg).run_batch("mix", requests, store)

    # the random faults really happened: every kind at least once (fixed by the seed)
    seen = Counter(e["outcome"] for e in srv.log if "[[" not in e["prompt"])
    assert set(FAULTS) <= set(seen), seen

    assert [r.key for r in results] == list(prompts)
    rec = run_record(store, "mix")
    ok, failed = sum(r.ok for r in results), sum(not r.ok for r in results)
    assert (rec["requested"], rec["ok"], rec["failed"], rec["unfinished"]) == (len(prompts), ok, failed, 0)
    assert ok + failed == len(prompts) and rec["status"] == "done"
    # every attempt reached the server, and the journal knows how many
    assert sum(r.attempts for r in results) == srv.chat_requests() == rec["http_requests"]

    by_key = {r.key: r for r in results}
    top = cfg.max_retries + 1
    assert (by_key["f500"].error_kind, by_key["f500"].attempts) == ("http", top)
    assert "injected server error" in by_key["f500"].raw and by_key["f500"].error.startswith("HTTP 500")
    assert (by_key["f400"].error_kind, by_key["f400"].attempts) == ("http", 1)  # not retryable
    assert (by_key["ftimeout"].error_kind, by_key["ftimeout"].attempts) == ("timeout", top)
    assert (by_key["ftrunc"].error_kind, by_key["ftrunc"].attempts) == ("bad_response", top)
    assert by_key["ftrunc"].raw.startswith('{"id": "chatcmpl-fault"')  # the broken body, kept
    assert (by_key["fbadjson"].error_kind, by_key["fbadjson"].attempts) == ("unparsable", 1)
    assert (by_key["fbadjson"].raw
            == json.dumps(answer(forced["fbadjson"]))[:len(json.dumps(answer(forced["fbadjson"]))) // 2])
    assert (by_key["fwrong"].error_kind, by_key["fwrong"].attempts) == ("off_schema", 1)
    assert json.loads(by_key["fwrong"].raw) == {"unexpected": 1, "other": "field"}

    for r in results:
        if r.ok:
            assert r.value == answer(prompts[r.key]) and r.error is None
            assert (r.tokens_in, r.tokens_out) == (len(prompts[r.key].split()) + 3, 7)
        else:
            assert r.error and r.error_kind and r.attempts >= 1
            assert len(r.attempt_log) == (r.attempts if r.error_kind in ("http", "timeout", "bad_response") else 0)
    assert rec["tokens_in"] == sum(r.tokens_in for r in results)
    assert rec["tokens_out"] == sum(r.tokens_out for r in results)

    # failures are listable, with the raw reply and the request that produced it
    failures = {f["key"]: f for f in run_failures(store, "mix")}
    assert set(failures) == {r.key for r in results if not r.ok}
    for key, f in failures.items():
        assert (f["raw"], f["error"], f["error_kind"], f["attempts"]) == (
            by_key[key].raw, by_key[key].error, by_key[key].error_kind, by_key[key].attempts)
        assert f["request"]["messages"][-1]["content"] == prompts[key]
    assert failures["ftimeout"]["raw"] is None and len(failures["ftimeout"]["attempt_log"]) == top


def test_retry_after_is_honoured(fault, store):
    srv = fault(retry_after=1.0)
    res = LLMClient(config(srv, backoff_s=0.01)).run_batch("ra", [Request("k", "[[once:429]] hi")], store)[0]
    assert res.ok and res.attempts == 2 and "Retry-After 1s" in res.attempt_log[0]
    first, second = srv.requests_for("hi")
    waited = second["start"] - first["end"]
    # the backoff alone would have been ~0.01 s: the wait is the server's Retry-After
    assert 0.98 <= waited < 2.5, waited


def test_concurrency_is_bounded(fault, store):
    srv = fault(fault_rate=0, delay_s=0.3)
    results = LLMClient(config(srv, concurrency=3, timeout_s=5)).run_batch(
        "conc", [Request(f"k{i}", f"p{i}") for i in range(9)], store)
    assert all(r.ok for r in results)
    assert srv.max_inflight == 3


def test_requests_per_minute_limit(fault, store):
    srv = fault(fault_rate=0)
    LLMClient(config(srv, rpm=240, concurrency=6)).run_batch(  # one start every 0.25 s
        "rpm", [Request(f"k{i}", f"p{i}") for i in range(6)], store)
    starts = sorted(e["start"] for e in srv.log)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 0.22, gaps


def test_json_mode_sent_and_dropped_where_unsupported(fault, store):
    srv = fault(fault_rate=0)
    res = LLMClient(config(srv, json_mode=True)).run_batch("json", [Request("k", "p")], store)[0]
    assert srv.log[0]["body"]["response_format"] == {"type": "json_object"}
    assert res.ok and res.value == answer("p")  # json_mode parses JSON without a parser given

    srv2 = fault(fault_rate=0, reject_response_format=True)
    results = LLMClient(config(srv2, json_mode=True, concurrency=1)).run_batch(
        "json2", [Request(f"k{i}", f"p{i}") for i in range(3)], store)
    assert [r.ok for r in results] == [True] * 3 and results[0].attempts == 2
    assert ["response_format" in e["body"] for e in srv2.log] == [True, False, False, False]
    assert run_record(store, "json2")["params"]["json_supported"] is False


def test_rejected_key_fails_before_any_work(fault, store, monkeypatch):
    srv = fault(api_key="right-key")
    monkeypatch.setenv("ASSAY_TEST_KEY", "wrong-key")
    with pytest.raises(AssayError, match=r"rejected the API key \(HTTP 401; key from \$ASSAY_TEST_KEY\)"):
        LLMClient(config(srv, api_key_env="ASSAY_TEST_KEY")).run_batch("k", [Request("k", "p")], store)
    assert srv.chat_requests() == 0 and list_llm_runs(store) == []
    monkeypatch.setenv("ASSAY_TEST_KEY", "right-key")
    assert LLMClient(config(srv, api_key_env="ASSAY_TEST_KEY")).run_batch("k", [Request("k", "[[ok]]")], store)[0].ok


def test_unreachable_endpoint_and_unknown_model_fail_before_any_work(fault, store):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(AssayError, match=f"cannot reach the LLM endpoint {dead}"):
        LLMClient(LLMConfig(base_url=dead, model="m")).run_batch("u", [Request("k", "p")], store)
    srv = fault()
    with pytest.raises(AssayError, match=r"does not serve model 'nope' \(it lists: fault-model\)"):
        LLMClient(config(srv, model="nope")).run_batch("u", [Request("k", "p")], store)
    assert srv.chat_requests() == 0 and list_llm_runs(store) == []


def test_resume_reparses_journal_and_sends_only_unfinished(fault, store):
    srv = fault(fault_rate=0)
    reqs = [Request(f"k{i}", f"p{i}", parse=json_parser("missing")) for i in range(5)]
    first = LLMClient(config(srv)).run_batch("rp", reqs, store)
    assert [r.error_kind for r in first] == ["off_schema"] * 5
    # a fixed parser, same run id: the journalled replies are read again, nothing is sent
    fixed = [Request(r.key, r.messages, parse=json_parser("answer")) for r in reqs]
    second = LLMClient(config(srv)).run_batch("rp", fixed, store)
    assert all(r.ok and r.resumed for r in second) and srv.chat_requests() == 5
    assert run_record(store, "rp")["ok"] == 5
    # retry_failed sends only what failed
    srv2 = fault(fault_rate=0)
    reqs2 = [Request("bad", "[[always:500]] qbad"), Request("good", "[[ok]] qgood")]
    LLMClient(config(srv2, max_retries=0)).run_batch("rf", reqs2, store)
    again = LLMClient(config(srv2, max_retries=0)).run_batch("rf", reqs2, store, retry_failed=True)
    assert [len(srv2.requests_for(t)) for t in ("qbad", "qgood")] == [2, 1]
    assert again[0].attempts == 2 and not again[0].ok and again[1].resumed


def test_changed_request_or_duplicate_key_is_refused(fault, store):
    srv = fault(fault_rate=0)
    LLMClient(config(srv)).run_batch("ch", [Request("k", "first prompt")], store)
    with pytest.raises(AssayError, match="journalled with a different request"):
        LLMClient(config(srv)).run_batch("ch", [Request("k", "second prompt")], store)
    with pytest.raises(AssayError, match="appears more than once"):
        LLMClient(config(srv)).run_batch("ch2", [Request("k", "a"), Request("k", "b")], store)


def test_sampled_requests_are_not_cached(fault, store):
    srv = fault(fault_rate=0)
    reqs = [Request("k", "[[ok]] same")]
    for run in ("s1", "s2"):
        LLMClient(config(srv, temperature=0.8, seed=None)).run_batch(run, reqs, store)
    assert srv.chat_requests() == 2
    LLMClient(config(srv, temperature=0.8, seed=5)).run_batch("s3", reqs, store)
    r = LLMClient(config(srv, temperature=0.8, seed=5)).run_batch("s4", reqs, store)[0]
    assert srv.chat_requests() == 3 and r.cached and r.attempts == 0


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from assay.core.store import Store
    from assay.core.llm import LLMClient, LLMConfig, Request, json_parser
    ws, base_url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = LLMConfig(base_url=base_url, model="fault-model", temperature=0, seed=1, timeout_s=0.5,
                    max_retries=2, backoff_s=0.02, concurrency=4)
    reqs = [Request(f"k{i}", f"item {i}", parse=json_parser("answer")) for i in range(n)]
    LLMClient(cfg).run_batch("killed", reqs, Store(ws))
    print("finished")
""")


def test_sigkill_midway_then_resume(fault, store, workspace, tmp_path):
    n = 40
    srv = fault(seed=11, fault_rate=0.3, faults=("500", "429", "truncated", "bad_json", "wrong"),
                retry_after=0.2, delay_s=0.15)
    script = tmp_path / "batch.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(workspace), srv.base_url, str(n)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    db = workspace / "catalog.sqlite"

    def finished_rows() -> int:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
                return conn.execute("SELECT COUNT(*) FROM llm_calls WHERE status IN ('ok','failed')").fetchone()[0]
        except sqlite3.OperationalError:  # not created yet
            return 0

    deadline = time.monotonic() + 60
    while finished_rows() < 12:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the batch made no progress"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert b"finished" not in proc.stdout.read()
    time.sleep(0.3)  # let the server log whatever the killed process had already sent

    before = {c["key"]: c for c in run_calls(store, "killed")}
    done_before = {k for k, c in before.items() if c["status"] in ("ok", "failed")}
    assert len(before) == n and 12 <= len(done_before) < n, len(done_before)
    assert run_record(store, "killed")["status"] == "interrupted"
    sent_before = srv.chat_requests()

    prompts = {f"k{i}": f"item {i}" for i in range(n)}
    reqs = [Request(k, p, parse=json_parser("answer")) for k, p in prompts.items()]
    results = LLMClient(config(srv)).run_batch("killed", reqs, store)

    # exactly the requested results, once each, in order, each finished
    assert [r.key for r in results] == list(prompts)
    rec = run_record(store, "killed")
    assert (rec["requested"], rec["ok"] + rec["failed"], rec["unfinished"], rec["sessions"]) == (n, n, 0, 2)
    assert rec["status"] == "done"
    # nothing that had finished before the kill was sent again, and its result is the journalled one
    resent = {e["prompt"] for e in srv.log[sent_before:]}
    for key in done_before:
        assert prompts[key] not in resent
        r = next(r for r in results if r.key == key)
        assert r.resumed and r.raw == before[key]["raw"] and r.attempts == before[key]["attempts"]
    # and everything that had not finished was sent
    assert {prompts[k] for k in prompts if k not in done_before} <= resent
    # attempts add up across both sessions; the only requests the journal may not have counted are
    # the ones in flight at the kill (at most `concurrency`), whose "sent" mark had not committed
    total = srv.chat_requests()
    assert total - 4 <= sum(r.attempts for r in results) <= total
    assert total - 4 <= rec["http_requests"] <= total
