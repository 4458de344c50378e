"""Concurrent committers: several processes commit many small versions to one workspace at once.

Each of PROCS processes commits PER versions to a dataset they all share and PER versions to a
dataset of its own, interleaved, and reads the shared dataset's latest version between commits. The
catalog's BEGIN IMMEDIATE transaction is what keeps them apart: afterwards no version may be lost
or doubled, each dataset's numbers must be exactly 1..N, every version must hold exactly the
records it was committed with, and the workspace must verify clean (no problems, no leftovers).

The same runs once on a workspace that does not exist yet (every process creates it and its catalog
at once), and a deterministic test pins down what goes wrong there: switching a new catalog file to
WAL mode while another opener is half-way through the same switch.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from assay.core.records import Record
from assay.core.store import Store

PROCS = 4
PER = 25
SHARED = "shared"

CHILD = r'''
import json, sys
import pyarrow as pa
from assay.core.records import Record, Provenance, rows_to_table
from assay.core.store import Store, VersionWriter

ws, k, per, shared = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

def records(tag, n):
    return [Record(instruction=f"task {i} of {tag}", output=f"answer {i} of {tag}",
                   provenance=Provenance(source=tag, source_row=i + 1, generator="concurrency-test")).to_row()
            for i in range(n)]

emit({"ready": k})
sys.stdin.readline()  # every process starts at once, opening the workspace included
store = Store(ws)
reads = 0
for j in range(per):
    for dataset in ((shared, f"own-{k}") if j % 2 == 0 else (f"own-{k}", shared)):
        tag = f"{dataset}/p{k}v{j}"
        n = 3 + (7 * j + k) % 11
        rows = records(tag, n)
        if j % 2 == 0:
            with VersionWriter(store, dataset, "concurrency", {"tag": tag, "n": n}) as writer:
                writer.add_table(rows_to_table(rows[: n // 2]))
                writer.add_table(rows_to_table(rows[n // 2:]))
            m = writer.manifest
        else:
            parts = [store.put_segment(rows_to_table(rows[:2])), store.put_segment(rows_to_table(rows[2:]))]
            m = store.commit(dataset, parts, operation="concurrency", params={"tag": tag, "n": n})
        emit({"dataset": dataset, "number": m.number, "id": m.id, "tag": tag, "n": n})
        # a reader among the writers: the latest shared version is always whole
        latest = store.resolve(shared)
        df = store.read(latest, ["id", "source"])
        assert df.height == latest.records == latest.params["n"], (df.height, latest)
        assert df["source"].unique().to_list() == [latest.params["tag"]], latest
        reads += 1
emit({"reads": reads})
'''


def expected_ids(tag: str, n: int) -> list[str]:
    return [Record(instruction=f"task {i} of {tag}", output=f"answer {i} of {tag}").id for i in range(n)]


def run_committers(tmp_path: Path, ws: str, per: int) -> list[dict]:
    script = tmp_path / "committer.py"
    script.write_text(CHILD)
    procs = [subprocess.Popen([sys.executable, "-u", str(script), ws, str(k), str(per), SHARED],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(PROCS)]
    try:
        for p in procs:  # wait until every interpreter has imported everything, then release them together
            assert json.loads(p.stdout.readline()) == {"ready": procs.index(p)}
        for p in procs:
            p.stdin.write("go\n")
        for p in procs:
            p.stdin.flush()
        results = []
        for k, p in enumerate(procs):
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, f"committer {k} failed:\n{err}"
            lines = [json.loads(line) for line in out.splitlines()]
            assert lines[-1] == {"reads": 2 * per}
            results.extend(dict(line, proc=k) for line in lines[:-1])
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)


# existing: the catalog exists (in WAL mode) before the committers start. fresh: they all create the
# workspace and its catalog at once, then commit (fewer versions: that race is at the start). Both on
# a local folder and on S3 (any_workspace), where the processes' objects meet in one bucket prefix
@pytest.mark.parametrize("fresh,per", [(False, PER), (True, 8)], ids=["existing-workspace", "fresh-workspace"])
def test_concurrent_committers_lose_nothing(tmp_path, any_workspace, fresh, per):
    if any_workspace.remote:
        # every request of the 4 processes is served by moto in this process (~4x a local commit):
        # half the commits keep the S3 run to ~25 s, and the processes still interleave
        per = min(per, PER // 2)
    if not fresh:
        any_workspace.store()
    assert any_workspace.catalog.exists() != fresh
    started = time.monotonic()
    results = run_committers(tmp_path, any_workspace.url, per)
    elapsed = time.monotonic() - started
    assert len(results) == 2 * PROCS * per

    store = any_workspace.store()
    report = store.verify()
    assert report["ok"], report["problems"]
    assert report["problems"] == [] and report["notes"] == []
    assert report["versions"] == 2 * PROCS * per

    # what the committers were told is exactly what the catalog holds
    catalog = {(v["dataset"], v["number"], v["id"]) for v in store.versions()}
    reported = {(r["dataset"], r["number"], r["id"]) for r in results}
    assert len(reported) == len(results), "two commits were given the same (dataset, number, id)"
    assert catalog == reported

    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for v in store.versions():
        by_dataset[v["dataset"]].append(v)
    assert set(by_dataset) == {SHARED} | {f"own-{k}" for k in range(PROCS)}
    assert [v["number"] for v in by_dataset[SHARED]] == list(range(1, PROCS * per + 1))
    for k in range(PROCS):
        own = by_dataset[f"own-{k}"]
        assert [v["number"] for v in own] == list(range(1, per + 1))

    # each version holds its own records, in order; one process's versions keep its commit order
    tag_of = {}
    for r in results:
        m = store.resolve(f"{r['dataset']}@{r['number']}")
        assert m.id == r["id"] and m.params == {"tag": r["tag"], "n": r["n"]}
        assert m.records == r["n"] == sum(p.kept for p in m.parts)
        df = store.read(m)
        assert df["id"].to_list() == expected_ids(r["tag"], r["n"]), f"{m.ref} holds the wrong records"
        assert df["source"].to_list() == [r["tag"]] * r["n"]
        tag_of[(r["dataset"], r["number"])] = r["tag"]
    for k in range(PROCS):
        own = [tag_of[(f"own-{k}", n)] for n in range(1, per + 1)]
        assert own == [f"own-{k}/p{k}v{j}" for j in range(per)]
        mine = [tag_of[(SHARED, n)] for n in range(1, PROCS * per + 1) if f"/p{k}v" in tag_of[(SHARED, n)]]
        assert mine == [f"{SHARED}/p{k}v{j}" for j in range(per)]

    # not vacuous: the processes really overlapped (the shared dataset's numbers interleave them)
    owners = [tag_of[(SHARED, n)].split("/")[1].split("v")[0] for n in range(1, PROCS * per + 1)]
    switches = sum(1 for a, b in zip(owners, owners[1:]) if a != b)
    assert switches >= PROCS, f"committers ran one after another, not at once: {owners}"
    print(f"{2 * PROCS * per} concurrent commits in {elapsed:.1f}s, {switches} owner switches in {SHARED}")


def test_opening_a_new_catalog_waits_for_a_concurrent_opener(tmp_path):
    """A new catalog file is in rollback-journal mode until the first opener switches it to WAL,
    and that opener holds the RESERVED lock while it rewrites the header. A second opener arriving
    then must wait (the catalog promises queueing with a 60 s timeout), not fail at once with
    "database is locked". The raw connection below holds that same lock for 0.3 s."""
    ws = tmp_path / "ws"
    ws.mkdir()
    other = sqlite3.connect(ws / "catalog.sqlite", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    try:
        store = Store(ws)
        assert store.versions() == []
    finally:
        release.join()
        other.close()
    assert time.monotonic() - started >= 0.25  # it waited for the other opener's lock
    with sqlite3.connect(ws / "catalog.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
