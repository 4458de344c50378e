"""Crash atomicity of a commit: SIGKILL a committing process at chosen moments, then check the store.

Each round runs a fresh Python process that commits large versions (150k synthesized records in
3 segments each) to one dataset, one after another, printing a marker line at each step: READY once
imported, GO once the store is open, BEGIN <tag> per version, SEG0/SEG1 around every segment object
write, C0 before `Store.commit`, M0/M1 around the manifest file write (inside the catalog's write
transaction), DONE once `commit` returned. The parent SIGKILLs it in a phase picked per round:
after a random delay, in the middle of a segment write, as the manifest is written, while the
manifest is in place but the catalog row is not committed (the child holds that state for 200 ms:
a correct store must not care), or right around the catalog's COMMIT.

Afterwards the workspace must verify with no problems, every catalogued version must hold exactly
the records it was committed with (ids, text and row numbers, all 150k), every commit that returned
before its process died must be there with the number and id it returned, nothing may appear but
those and the commits in flight at a kill, version numbers must be 1..N, and the manifests of
commits killed before their catalog row committed must be invisible leftovers (notes, not problems).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

N_RECORDS = 150_000
CHUNK = 50_000  # one segment per chunk: 3 segments a version
ROUNDS = 20
DATASET = "big"

CHILD = r'''
import sys, time
import polars as pl
import pyarrow as pa
from assay.core.records import RECORD_SCHEMA
from assay.core.store import Store

ws, rnd, n, chunk, widen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])

def emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()

def table(tag, lo, hi):
    idx = pl.int_range(lo, hi, dtype=pl.Int64)
    t = pl.select(
        id=pl.format("{}:{}", pl.lit(tag), idx.cast(pl.String).str.zfill(7)),
        instruction=pl.format("do task {} of {}", idx, pl.lit(tag)),
        input=pl.lit(""),
        output=pl.format("answer {}", (idx * 7919) % 1000003),
        source=pl.lit(tag),
        source_row=idx + 1,
        generator=pl.lit("synth"),
    ).to_arrow()
    return pa.table({f.name: t[f.name] if f.name in t.column_names else pa.nulls(hi - lo, f.type)
                     for f in RECORD_SCHEMA})

emit("READY")
sys.stdin.readline()  # the parent starts the next child while this one waits: go
store = Store(ws)
real_write = store.write_atomic

def traced_write(path, data):
    manifest = "/manifests/" in path
    emit("M0" if manifest else "SEG0")
    real_write(path, data)
    emit("M1" if manifest else "SEG1")
    if manifest and widen:
        # still inside the catalog's write transaction: widen the window before COMMIT
        time.sleep(widen)

store.write_atomic = traced_write
emit("GO")
seq = 0
while True:
    tag = f"r{rnd:03d}c{seq:02d}"
    emit(f"BEGIN {tag}")
    parts = []
    for lo in range(0, n, chunk):
        parts.append(store.put_segment(table(tag, lo, min(n, lo + chunk))))
    emit("C0")
    m = store.commit("''' + DATASET + r'''", parts, operation="synth", params={"tag": tag, "n": n})
    emit(f"DONE {tag} {m.number} {m.id}")
    seq += 1
'''

PHASES = ("random", "segment", "manifest", "commit")


def expected_frame(tag: str, n: int) -> pl.DataFrame:
    idx = pl.int_range(0, n, dtype=pl.Int64)
    return pl.select(
        id=pl.format("{}:{}", pl.lit(tag), idx.cast(pl.String).str.zfill(7)),
        instruction=pl.format("do task {} of {}", idx, pl.lit(tag)),
        output=pl.format("answer {}", (idx * 7919) % 1000003),
        source_row=idx + 1,
    )


class Child:
    """A committing child process whose marker lines a reader thread timestamps as they arrive."""

    def __init__(self, script: Path, ws: str, rnd: int, widen: float = 0.0):
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(script), ws, str(rnd), str(N_RECORDS), str(CHUNK), str(widen)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.kill_on: tuple[str, int, float] | None = None  # (marker, occurrence, extra delay)
        self.delay: float | None = None  # or: kill this long after GO
        self.killed_at_line: int | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        seen: dict[str, int] = {}
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            with self.cond:
                self.lines.append(line)
                marker = line.split(" ", 1)[0]
                seen[marker] = seen.get(marker, 0) + 1
                target = self.kill_on
                self.cond.notify_all()
            if target and self.killed_at_line is None and marker == target[0] and seen[marker] == target[1]:
                if target[2]:
                    time.sleep(target[2])
                self.kill()

    def wait_for(self, marker: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any(line.split(" ", 1)[0] == marker for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not self.reader.is_alive():
                    raise AssertionError(f"child never printed {marker}: {self.lines} "
                                         f"stderr={self.proc.stderr.read() if self.proc.poll() is not None else ''}")
                self.cond.wait(min(left, 0.1))

    def go(self) -> None:
        self.wait_for("READY")
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        self.wait_for("GO")

    def kill(self) -> None:
        with self.cond:
            if self.killed_at_line is not None:
                return
            self.killed_at_line = len(self.lines)
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def finish(self) -> int:
        rc = self.proc.wait(timeout=60)
        self.reader.join(timeout=10)
        self.stderr = self.proc.stderr.read()
        self.proc.stderr.close()
        return rc


def _outcome(lines: list[str]) -> dict:
    """What the child's markers say: commits acknowledged, and where the commit in flight was."""
    done: dict[str, tuple[int, str]] = {}
    in_flight: str | None = None
    phase_markers: list[str] = []
    for line in lines:
        word, _, rest = line.partition(" ")
        if word == "BEGIN":
            in_flight, phase_markers = rest, []
        elif word == "DONE":
            tag, number, vid = rest.split()
            done[tag] = (int(number), vid)
            in_flight, phase_markers = None, []
        elif in_flight is not None:
            phase_markers.append(word)
    return {"done": done, "in_flight": in_flight, "markers": phase_markers}


# on a local folder and on S3 (any_workspace), where a segment or manifest write is one PUT, not a rename
@pytest.mark.slow
def test_sigkill_during_commit_never_leaves_a_partial_version(tmp_path, any_workspace):
    ws = any_workspace
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rng = random.Random(int(os.environ.get("ASSAY_KILL_SEED", "20240611")))

    acknowledged: dict[str, tuple[int, str]] = {}
    in_flight_tags: list[tuple[str, list[str]]] = []  # (tag, markers seen) of each killed commit
    children: list[Child] = []

    def spawn(rnd: int) -> Child:
        """The child of round `rnd`, with the moment it is to be killed."""
        phase = PHASES[rnd % len(PHASES)]
        commit_index = 1 + (rnd // len(PHASES)) % 2  # kill in the child's 1st or 2nd commit
        widen, kill_on, delay = 0.0, None, None
        if phase == "random":
            delay = rng.uniform(0.0, 1.0)
        elif phase == "segment":
            # in the middle of one segment's write (tmp file written/fsynced/renamed), any segment
            kill_on = ("SEG0", (commit_index - 1) * 3 + rng.randint(1, 3), rng.uniform(0, 0.004))
        elif phase == "manifest":
            # as the manifest file is being written
            kill_on = ("M0", commit_index, 0.0)
        elif rnd % 8 < 4:
            # the manifest file is in place, the catalog row not committed yet: the child holds
            # that state for 200 ms and the kill lands inside it
            widen, kill_on = 0.2, ("M1", commit_index, rng.uniform(0, 0.05))
        else:
            # right around the catalog's COMMIT (before, during its WAL fsync, or just after)
            kill_on = ("M1", commit_index, rng.uniform(0, 0.006))
        child = Child(script, ws.url, rnd, widen)
        child.kill_on, child.delay = kill_on, delay
        children.append(child)
        return child

    started = time.monotonic()
    try:
        upcoming = spawn(0)
        for rnd in range(ROUNDS):
            # the next child imports while this one runs: the rounds do not wait on interpreter start-up
            child, upcoming = upcoming, spawn(rnd + 1)
            child.go()
            if child.delay is not None:
                time.sleep(child.delay)
                child.kill()
            rc = child.finish()
            assert rc == -signal.SIGKILL, \
                f"round {rnd}: child ended with {rc}, not by our SIGKILL: {child.lines}\n{child.stderr}"
            out = _outcome(child.lines)
            assert not set(out["done"]) & set(acknowledged)
            acknowledged.update(out["done"])
            if out["in_flight"] is not None:
                in_flight_tags.append((out["in_flight"], out["markers"]))
        elapsed = time.monotonic() - started

        store = ws.store()
        report = store.verify()
        assert report["ok"], report["problems"]
        assert report["problems"] == []

        with sqlite3.connect(ws.catalog) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

        versions = store.versions(DATASET)
        assert versions, "no version was ever committed: the kills all came too early"
        assert [v["number"] for v in versions] == list(range(1, len(versions) + 1)), \
            "version numbers must be 1..N with no gap or duplicate"
        assert store.versions() == versions  # nothing but the one dataset

        visible: dict[str, dict] = {}
        for v in versions:
            m = store.load_manifest(v["id"])
            tag = m.params["tag"]
            assert tag not in visible, f"{tag} committed twice"
            visible[tag] = v
            assert m.records == v["records"] == N_RECORDS == m.params["n"]
            assert sum(p.kept for p in m.parts) == N_RECORDS
            assert len(m.parts) == N_RECORDS // CHUNK
            df = store.read(v["ref"], ["id", "instruction", "output", "source_row"])
            assert df.height == N_RECORDS, f"{v['ref']} reads {df.height} rows"
            assert df.equals(expected_frame(tag, N_RECORDS)), f"{v['ref']} does not hold its records"
            assert store.page(v["ref"], page=2999, size=50)["id"].to_list()[-1] == f"{tag}:{N_RECORDS - 1:07d}"

        # every commit that returned before the kill is visible, with the number and id it returned
        for tag, (number, vid) in acknowledged.items():
            assert tag in visible, f"acknowledged commit {tag} ({number}) is lost"
            assert (visible[tag]["number"], visible[tag]["id"]) == (number, vid)
        # anything else visible is a commit that was in flight when its process died
        killed_tags = {tag for tag, _ in in_flight_tags}
        assert set(visible) - set(acknowledged) <= killed_tags

        # commits killed once the manifest file was in place but not visible left an orphan manifest;
        # commits that never renamed a manifest into place left none
        orphan_manifests = [n for n in report["notes"] if "not in the catalog" in n]
        sure_orphans = sum(1 for tag, marks in in_flight_tags if "M1" in marks and tag not in visible)
        maybe_orphans = sum(1 for tag, marks in in_flight_tags if "M0" in marks and tag not in visible)
        assert sure_orphans <= len(orphan_manifests) <= maybe_orphans, (report["notes"], in_flight_tags)
        on_disk = {name for name in ws.names("manifests") if ".tmp-" not in name}
        assert on_disk == {f"{v['id']}.json" for v in versions} | {
            n.split()[1] for n in orphan_manifests}

        # not vacuous: kills hit the commit itself, some commits were killed before they became
        # visible after writing their manifest, and later rounds still committed after such kills
        mid_commit = [tag for tag, marks in in_flight_tags if "C0" in marks]
        assert len(mid_commit) >= ROUNDS // 4, in_flight_tags
        assert sure_orphans >= 1, in_flight_tags
        assert any("SEG0" in marks and "C0" not in marks for _, marks in in_flight_tags)
        assert len(acknowledged) >= ROUNDS // 4
        assert report["notes"], "kills mid-commit should leave invisible leftovers behind"
        unacknowledged = len(set(visible) - set(acknowledged))
        print(f"{ROUNDS} rounds in {elapsed:.1f}s: {len(versions)} versions, {len(acknowledged)} acknowledged, "
              f"{unacknowledged} committed by a killed process before it could say so, "
              f"{len(mid_commit)} killed mid-commit, {len(orphan_manifests)} orphan manifests, "
              f"{len(report['notes'])} notes")

        # the workspace stays usable after all this: one more commit lands as the next number
        upcoming.kill_on, upcoming.delay = ("DONE", 1, 0.0), None
        upcoming.go()
        assert upcoming.finish() == -signal.SIGKILL
        assert [v["number"] for v in store.versions(DATASET)] == list(range(1, len(versions) + 2))
        assert store.verify()["ok"]
    finally:
        for c in children:
            if c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait(timeout=30)
