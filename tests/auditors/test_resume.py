"""A killed audit resumes from its finished chunks: per-record work is computed and saved in chunks
(auditors/cache.py), so a SIGKILL loses at most the chunk in flight, stores no audit, and the next run
computes only the rest and gives exactly the columns of an uninterrupted audit."""

import os
import signal
import subprocess
import sys
import time

from auditor_helpers import codealpaca
from helpers import write_jsonl
from polars.testing import assert_frame_equal

from assay.auditors.runner import make_auditor, run_audit
from assay.core.audits import audit_columns, latest_audits
from assay.core.store import Store
from assay.pipelines.importer import import_source

CHUNK = 200  # records per saved chunk in this test (50,000 by default)


def chunk_files(workspace) -> list:
    return [p for p in (workspace / "cache" / "quality").rglob("*.parquet")]


def test_a_killed_audit_resumes_from_its_chunks_with_identical_results(tmp_path, shared_data, monkeypatch):
    rows = codealpaca(shared_data)  # all 4,535
    source = write_jsonl(tmp_path / "code.jsonl", rows)
    killed, fresh = tmp_path / "killed", tmp_path / "fresh"
    version = import_source(Store(killed), str(source), "code")
    env = {**os.environ, "ASSAY_WORKSPACE": str(killed), "ASSAY_AUDIT_CHUNK_ROWS": str(CHUNK)}
    proc = subprocess.Popen([sys.executable, "-m", "assay.app.cli", "audit", "code", "-a", "quality", "--json"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(chunk_files(killed)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the audit finished before it could be killed"
    saved = len(chunk_files(killed))
    assert 3 <= saved < len(rows) // CHUNK
    assert latest_audits(Store(killed), version.id) == []  # nothing stored: no half audit to filter on

    monkeypatch.setenv("ASSAY_AUDIT_CHUNK_ROWS", str(CHUNK))
    resumed = run_audit(Store(killed), "code", [make_auditor("quality")])["auditors"]["quality"]["cache"]
    # the finished chunks were reused, not recomputed (their rows are hits; each chunk is CHUNK rows,
    # less the records that appear twice in CodeAlpaca)
    assert resumed["hits"] >= saved * CHUNK * 0.9 and resumed["misses"] <= len(rows) - saved * CHUNK * 0.9
    assert resumed["hits"] + resumed["misses"] >= len(rows) * 0.98

    import_source(Store(fresh), str(source), "code")
    uninterrupted = run_audit(Store(fresh), "code", [make_auditor("quality")])["auditors"]["quality"]["cache"]
    assert uninterrupted["hits"] == 0
    assert_frame_equal(audit_columns(Store(killed), "code"), audit_columns(Store(fresh), "code"))
