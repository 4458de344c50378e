"""Catalog operations: one kept-open SQLite connection per thread vs a new connection per operation.

The work is an annotator's loop through `core/annotation/` (next record, then a decision, per
record), and listing the versions of a dataset, on a real workspace. The baseline is the catalog as
it was before it kept connections open: every operation opens a connection and closes it, and the
close checkpoints the WAL and fsyncs it (`--baseline` patches `Catalog.connection` back to that).
Both sides run in this process, one after the other, on their own workspace.

    .venv/bin/python bench/catalog_bench.py [--records 300]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import write_json


def _fresh_connection_per_operation(catalog):
    @contextlib.contextmanager
    def connection():
        conn = catalog.connect()
        try:
            yield conn
        finally:
            conn.close()
    return connection


def run_side(side: str, records: int, folder: Path) -> dict:
    from unittest import mock

    import polars as pl

    from assay.core import annotation as ann
    from assay.core.catalog import Catalog
    from assay.core.store import Store

    patch = (mock.patch.object(Catalog, "connection", lambda self: _fresh_connection_per_operation(self)())
             if side == "baseline" else contextlib.nullcontext())
    with patch:
        store = Store(folder / side)
        rows = pl.DataFrame({"instruction": [f"task {i}" for i in range(records)],
                             "output": [f"answer {i}" for i in range(records)]})
        source = folder / f"{side}.jsonl"
        rows.write_ndjson(source)
        from assay.pipelines.importer import import_source

        import_source(store, str(source), "d")
        admin = ann.OPERATOR
        ann.add_user(store, admin, "boss", "secret-pass-0", role="admin")
        ann.add_user(store, ann.get_user(store, "boss"), "ann", "secret-pass-1")
        user = ann.get_user(store, "ann")
        session = ann.create_session(store, admin, "d", name="s")
        per_record = []
        t0 = time.perf_counter()
        while True:
            t = time.perf_counter()
            item = ann.next_item(store, user, session.name)
            if item is None:
                break
            ann.decide(store, user, session.name, item.record_id, "accept", revision=item.revision)
            per_record.append(time.perf_counter() - t)
        loop_s = time.perf_counter() - t0
        t = time.perf_counter()
        for _ in range(200):
            store.versions("d")
        list_s = (time.perf_counter() - t) / 200
    return {"records": len(per_record), "ms_per_record": 1000 * statistics.median(per_record),
            "loop_s": loop_s, "versions_ms": 1000 * list_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=300)
    ap.add_argument("--json-out")
    args = ap.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in ("baseline", "assay"):
            result[side] = run_side(side, args.records, Path(tmp))
            print(side, json.dumps(result[side]), flush=True)
    result["speedup_per_record"] = result["baseline"]["ms_per_record"] / result["assay"]["ms_per_record"]
    result["speedup_versions"] = result["baseline"]["versions_ms"] / result["assay"]["versions_ms"]
    print(f"annotation next+decide: {result['baseline']['ms_per_record']:.1f} ms -> "
          f"{result['assay']['ms_per_record']:.1f} ms a record ({result['speedup_per_record']:.1f}x); "
          f"versions: {result['baseline']['versions_ms']:.2f} ms -> "
          f"{result['assay']['versions_ms']:.2f} ms ({result['speedup_versions']:.1f}x)")
    write_json(args.json_out, result)


if __name__ == "__main__":
    main()
