"""Background jobs: real detached processes recorded in the workspace catalog."""

from __future__ import annotations

import os
import signal
import time

import pytest
from helpers import write_jsonl

from assay.core import jobs
from assay.core.store import Store


def big_file(tmp_path, rows=150_000):
    return write_jsonl(tmp_path / "big.jsonl",
                       [{"instruction": f"task {i}", "output": f"answer {i} " * 3} for i in range(rows)])


def test_job_runs_command_and_records_result_seen_by_another_store(store, workspace, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(25)])
    job_id = jobs.start(store, ["import", str(path), "--name", "small"], kind="import", title="import small")
    job = jobs.wait(store, job_id, lambda j: j.finished)
    assert job.status == "succeeded", job.error
    assert job.result["records"] == 25
    # the version the job made is real, and a fresh Store (a reloaded page, another tab) sees the job
    other = Store(workspace)
    assert other.resolve("small").records == 25
    seen = jobs.list_jobs(other)
    assert [j.id for j in seen] == [job_id]
    assert seen[0].fraction == 1.0 and seen[0].title == "import small"
    # the import's progress bar reported to the job while it ran
    assert seen[0].total and seen[0].done == seen[0].total and seen[0].stage


def test_failed_command_records_its_error_and_log(store, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "ok", "output": "x"}\n{not json\n')
    job_id = jobs.start(store, ["import", str(path), "--name", "bad"], kind="import")
    job = jobs.wait(store, job_id, lambda j: j.finished)
    assert job.status == "failed"
    assert "bad.jsonl" in job.error and ":2" in job.error  # names the file and the line
    assert "bad.jsonl" in jobs.log_tail(store, job_id)
    assert store.versions() == []  # nothing half-written


def test_killed_job_shows_as_failed_and_cancel_stops_the_work(store, tmp_path):
    path = big_file(tmp_path)
    killed = jobs.start(store, ["import", str(path), "--name", "big"], kind="import")
    job = jobs.wait(store, killed, lambda j: j.status == "running")
    os.killpg(job.pid, signal.SIGKILL)  # the whole job, as a crash or OOM kill would
    job = jobs.wait(store, killed, lambda j: j.finished, timeout=20)
    assert job.status == "failed" and "died" in job.error and job.log_path in job.error

    cancelled = jobs.start(store, ["import", str(path), "--name", "big"], kind="import")
    jobs.wait(store, cancelled, lambda j: j.status == "running")
    job = jobs.cancel(store, cancelled)
    assert job.status == "cancelled"
    deadline = time.monotonic() + 20
    while jobs._alive(job.pid, None) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not jobs._alive(job.pid, None)
    assert jobs.get(store, cancelled).status == "cancelled"  # the supervisor did not overwrite it
    assert store.versions() == []  # neither import committed


def test_report_is_throttled_but_never_loses_the_end(store, monkeypatch):
    catalog = jobs._catalog(store)
    with catalog.write() as conn:  # a job row without a process: report() is what is under test
        conn.execute("INSERT INTO jobs (id, kind, title, argv, status, created_at, log_path, pid) "
                     "VALUES ('j1', 'test', 't', '[]', 'running', 'now', '/dev/null', ?)", (os.getpid(),))
    monkeypatch.setenv(jobs.ENV_JOB, "j1")
    monkeypatch.setenv(jobs.ENV_CATALOG, str(catalog.path))
    jobs._reporter.clear()
    jobs.report(done=0, total=10, stage="work", ok=0)
    jobs.report(done=3, ok=3)  # within 0.5 s of the last write: kept in memory only
    job = jobs.get(store, "j1")
    assert (job.done, job.total, job.stage, job.info) == (0, 10, "work", {"ok": 0})
    jobs.report(done=10, ok=9, failed=1)  # the bar is full: written at once
    job = jobs.get(store, "j1")
    assert (job.done, job.info) == (10, {"ok": 9, "failed": 1})
    jobs._reporter.clear()


def test_report_outside_a_job_does_nothing(store, monkeypatch):
    monkeypatch.delenv(jobs.ENV_JOB, raising=False)
    jobs.report(done=1, total=2, stage="x")  # must not raise or write anywhere
    assert jobs.list_jobs(store) == []


def test_bad_command_and_unknown_job(store):
    with pytest.raises(Exception, match="list of strings"):
        jobs.start(store, [], kind="x")
    with pytest.raises(Exception, match="unknown job"):
        jobs.get(store, "nope")
