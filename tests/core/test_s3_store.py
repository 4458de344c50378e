"""A workspace on object storage: the store against a real S3 API (moto's standalone server on
loopback, started once per test session by the `s3_server` fixture), reached through s3fs exactly as
a user's `--workspace s3://bucket/prefix` is, with the catalog a local SQLite file (ASSAY_CATALOG).

The store's crash-atomicity and concurrency tests run on S3 too (tests/core/test_store_atomicity.py,
test_store_concurrency.py, parametrized over `any_workspace`); these tests cover the rest: the whole
user path through the CLI, a writer killed between its objects and its catalog row, listings that
see other processes' objects, a background job, and a missing bucket or unreachable endpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import s3fs
from helpers import Cli, write_jsonl

from assay.auditors.runner import make_auditor, run_audit
from assay.core.audits import audit_columns, filter_version
from assay.core.errors import AssayError
from assay.core.llm.server import free_port
from assay.core.store import Store
from assay.pipelines.exporter import export_version
from assay.pipelines.importer import import_source

WHERE = "NOT exact_duplicate AND NOT minhash_duplicate"


def seed_rows(shared_data) -> list[dict]:
    """The Self-Instruct seed tasks (real data, 175 rows) plus planted duplicates: 6 exact copies and
    6 near-copies (one word of the output changed), so both auditors have something to find."""
    tasks = [json.loads(line) for line in
             (shared_data / "instructions" / "self_instruct_seed_tasks.jsonl").read_text().splitlines()]
    rows = [{"instruction": t["instruction"], "input": t["instances"][0]["input"],
             "output": t["instances"][0]["output"]} for t in tasks]
    long = [r for r in rows if len(r["output"].split()) >= 80]  # one edited word keeps Jaccard ~0.9
    exact = [dict(r) for r in rows[:6]]
    near = [dict(r, output=r["output"].replace(r["output"].split()[20], "PLANTED", 1)) for r in long[:6]]
    return rows + exact + near


def test_import_audit_filter_export_verify_on_s3(s3_workspace, shared_data, tmp_path):
    """The user's path on an s3:// workspace with the real CLI, checked against the same steps on a
    local workspace: the same records, audit columns, filtered version and exported file."""
    rows = seed_rows(shared_data)
    src = write_jsonl(tmp_path / "seed.jsonl", rows)
    cli = Cli(s3_workspace.url)
    imported = cli.json("import", str(src), "--name", "seed")
    assert imported["records"] == len(rows)
    audited = cli.json("audit", "seed", "--auditors", "exact,minhash")["auditors"]
    kept = cli.json("filter", "seed", "--where", WHERE, "--name", "clean")
    out = tmp_path / "clean.jsonl"
    assert cli.json("export", "clean", str(out))["records"] == kept["records"]
    assert cli.json("verify")["ok"] is True

    s3 = s3_workspace.store()
    columns = audit_columns(s3, "seed")
    planted = columns.slice(len(rows) - 12)
    assert planted["exact_duplicate"].head(6).all() and planted["minhash_duplicate"].tail(6).all()
    assert not planted["exact_duplicate"].tail(6).any()
    assert audited["exact"]["duplicate_records"] >= 6 and audited["minhash"]["duplicate_records"] >= 12
    assert kept["records"] == columns.filter(~pl.col("exact_duplicate") & ~pl.col("minhash_duplicate")).height
    assert [json.loads(line)["output"] for line in out.read_text().splitlines()] == \
        [r["output"] for r, keep in zip(rows, (~columns["exact_duplicate"] & ~columns["minhash_duplicate"])) if keep]

    # the same on a local folder, in this process: S3 must change nothing but where the bytes live
    local = Store(tmp_path / "local", str(tmp_path / "local" / "catalog.sqlite"))  # not ASSAY_CATALOG's
    m = import_source(local, str(src), "seed", show_progress=False)
    run_audit(local, m.id, [make_auditor("exact"), make_auditor("minhash")], show_progress=False)
    local_kept = filter_version(local, "seed", WHERE, "clean")
    local_out = tmp_path / "local.jsonl"
    export_version(local, "clean", str(local_out))
    assert s3.resolve("seed").content_hash == m.content_hash
    assert columns.equals(audit_columns(local, "seed"))
    assert s3.resolve("clean").content_hash == local_kept.content_hash and kept["records"] == local_kept.records
    assert out.read_text() == local_out.read_text()

    # the objects are in the bucket and nowhere else: besides the source and exports, the only local
    # file is the catalog (and SQLite's WAL beside it)
    assert s3_workspace.names("objects/segments") and s3_workspace.names("objects/selections")
    # the audit's results and its record cache
    assert s3_workspace.names("audits") == {s3.resolve("seed").id} and s3_workspace.names("cache")
    assert not (Path.cwd() / s3_workspace.url.split("/")[2]).exists()  # no bucket path taken as a local one
    assert s3_workspace.names("manifests") == {f"{v['id']}.json" for v in s3.versions()}
    assert {p.name for p in tmp_path.iterdir()} - {"seed.jsonl", "clean.jsonl", "local.jsonl", "local"} \
        <= {"catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"}


KILLED_COMMIT = r'''
import sys, time
from assay.core.records import Record, rows_to_table
from assay.core.store import Store

store = Store(sys.argv[1])
real_write = store.write_atomic

def write_then_hang(path, data):
    real_write(path, data)
    if "/manifests/" in path:  # the manifest object is in the bucket; the catalog row is not committed
        print("MANIFEST", path, flush=True)
        time.sleep(600)

store.write_atomic = write_then_hang
rows = [Record(instruction=f"task {i}", output=f"answer {i}").to_row() for i in range(50)]
parts = [store.put_segment(rows_to_table(rows[:25])), store.put_segment(rows_to_table(rows[25:]))]
print("SEGMENTS", " ".join(p.segment for p in parts), flush=True)
store.commit("killed", parts, operation="import", params={})
print("COMMITTED", flush=True)
'''


def test_writer_killed_after_its_objects_before_its_catalog_row_leaves_no_version(s3_workspace, tmp_path):
    """Objects first, catalog row last: SIGKILL a committer whose segments and manifest are in the
    bucket while its catalog transaction is still open. No version is visible, the workspace verifies,
    the orphan manifest is a note, and the next commit takes number 1."""
    script = tmp_path / "killed.py"
    script.write_text(KILLED_COMMIT)
    proc = subprocess.Popen([sys.executable, str(script), s3_workspace.url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        segments = proc.stdout.readline().split()
        manifest = proc.stdout.readline().split()
        assert segments[:1] == ["SEGMENTS"] and manifest[:1] == ["MANIFEST"], (segments, manifest,
                                                                                proc.stderr.read())
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

    # not vacuous: the killed writer's objects really are in the bucket
    orphan = manifest[1].rsplit("/", 1)[-1]
    assert s3_workspace.names("manifests") == {orphan}
    assert s3_workspace.names("objects/segments") == {f"{d}.parquet" for d in segments[1:]}

    store = s3_workspace.store()
    assert store.versions() == []
    with pytest.raises(AssayError):
        store.resolve("killed")
    report = store.verify()
    assert report["ok"] and report["versions"] == 0
    assert report["notes"] == [f"manifest {orphan} is not in the catalog (a killed commit; invisible)"]

    # the workspace goes on: the same segments (content-addressed, already there) commit as version 1
    from assay.core.manifest import Part

    m = store.commit("killed", [Part(segment=d, rows=25, kept=25) for d in segments[1:]], operation="import",
                     params={})
    assert m.number == 1 and store.read("killed").height == 50
    assert store.verify()["ok"]


def test_listing_sees_objects_another_process_wrote(s3_workspace):
    """s3fs caches listings per filesystem instance, which fsspec shares process-wide: the store's must
    not, or `verify` (and the audit cache) would miss what a concurrent writer put there since."""
    store = s3_workspace.store()
    folder = store.path("manifests")
    store.write_atomic(f"{folder}/0000.json", b"{}")
    assert store.listdir(folder) == [f"{folder}/0000.json"]  # a listing s3fs would cache by default
    other = s3fs.S3FileSystem(skip_instance_cache=True)  # another writer, with its own connection
    other.pipe_file(f"{folder}/0123abcd.json", b"{}")
    assert store.listdir(folder) == [f"{folder}/0000.json", f"{folder}/0123abcd.json"]
    assert "manifest 0123abcd.json is not in the catalog" in " ".join(store.verify()["notes"])


def test_a_missing_bucket_is_a_clear_error_and_is_not_created(s3_server, tmp_path):
    url = "s3://no-such-bucket-here/ws"
    with pytest.raises(AssayError, match="bucket 'no-such-bucket-here' does not exist"):
        Store(url, str(tmp_path / "catalog.sqlite"))
    assert not s3fs.S3FileSystem(skip_instance_cache=True).exists("no-such-bucket-here")
    proc = Cli(url)("versions", check=False)
    assert proc.returncode == 1 and "no-such-bucket-here" in proc.stderr + proc.stdout


def test_an_unreachable_endpoint_is_a_clear_error(s3_server, tmp_path, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries would take ~20 s to give up
    # fsspec keeps one filesystem per set of options, connected to the endpoint it was made with
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        with pytest.raises(AssayError, match=f"cannot reach bucket 'assay-test'.*{dead}"):
            Store("s3://assay-test/ws", str(tmp_path / "catalog.sqlite"))
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


def test_a_remote_workspace_needs_a_local_catalog(s3_workspace, monkeypatch):
    monkeypatch.delenv("ASSAY_CATALOG")
    with pytest.raises(AssayError, match="ASSAY_CATALOG"):
        Store(s3_workspace.url)


def test_a_background_job_reaches_the_same_s3_workspace_and_catalog(s3_workspace, tmp_path, monkeypatch):
    """A job (the app's way to run a command) gets the workspace URL and the catalog path from its
    parent: the catalog given to Store directly, not by ASSAY_CATALOG, is the one the job commits to."""
    from assay.core import jobs

    monkeypatch.delenv("ASSAY_CATALOG")
    store = s3_workspace.store()
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(25)])
    job = jobs.wait(store, jobs.start(store, ["import", str(path), "--name", "small"], kind="import"),
                    lambda j: j.finished, timeout=120)
    assert job.status == "succeeded", job.error
    assert s3_workspace.store().resolve("small").records == 25
    assert len(s3_workspace.names("objects/segments")) == 1
