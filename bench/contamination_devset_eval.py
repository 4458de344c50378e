"""Thresholds of the contamination auditor chosen on the development set's tuning half, and P/R/F1
per tier on its held-out half (the figures in docs/auditors/contamination.md).

    python bench/contamination_devset_eval.py [--no-semantic] [--gsm8k-items 200]

Two sets (auditors/contamination_devset.py), each planted among the 4,535 real CodeAlpaca records:
every HumanEval item rephrased once plus 20 verbatim copies (code), and GSM8K test questions
rephrased (natural language). One audit per set with every tier on; each tier's threshold is then
the one that maximises F1 on the tuning half (ties: the higher threshold), measured on the held-out
half. A record counts as found when the tier flags it (whichever item it names).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "auditors"))

from auditor_helpers import codealpaca, gsm8k, human_eval  # noqa: E402
from helpers import SHARED_DATA, imported_version  # noqa: E402

from assay.auditors.contamination_devset import code_devset, gsm8k_devset  # noqa: E402
from assay.auditors.runner import make_auditor, run_audit  # noqa: E402
from assay.core.audits import audit_columns  # noqa: E402
from assay.core.store import Store  # noqa: E402


def prf(labels, flags) -> dict:
    tp = sum(1 for y, f in zip(labels, flags) if y and f)
    fp = sum(1 for y, f in zip(labels, flags) if f and not y)
    fn = sum(1 for y, f in zip(labels, flags) if y and not f)
    clean = sum(1 for y in labels if not y)
    return {"precision": round(tp / max(tp + fp, 1), 4), "recall": round(tp / max(tp + fn, 1), 4),
            "f1": round(2 * tp / max(2 * tp + fp + fn, 1), 4), "fp": fp, "fp_rate": round(fp / max(clean, 1), 5),
            "positives": tp + fn}


def tune(records, scores) -> tuple[float, dict]:
    tune_rows = [(r.item is not None, s) for r, s in zip(records, scores) if r.split == "tune"]
    best = (-1.0, 0.0)
    for k in range(30, 100):
        t = k / 100
        f1 = prf([y for y, _ in tune_rows], [s is not None and s >= t for _, s in tune_rows])["f1"]
        if f1 >= best[0]:
            best = (f1, t)
    return best[1], {"tune_f1": best[0]}


def evaluate(name, records, benchmarks, semantic: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp))
        version = imported_version(store, name, [r.row() for r in records])
        start = time.perf_counter()
        auditor = make_auditor("contamination", {"benchmarks": benchmarks, "semantic": semantic})
        summary = run_audit(store, version.id, [auditor], show_progress=False)["auditors"]["contamination"]
        seconds = time.perf_counter() - start
        cols = audit_columns(store, version).sort("_pos")
    held = [r.split == "held-out" for r in records]
    labels = [r.item is not None for r, h in zip(records, held) if h]

    def on_held(values):
        return [v for v, h in zip(values, held) if h]

    out: dict = {"records": len(records), "audit_seconds": round(seconds, 1), "tiers": {},
                 "coverage": {k: v["text"] for k, v in summary["coverage"].items()}}
    out["tiers"]["ngram"] = prf(labels, on_held(cols["contamination_ngram"].to_list()))
    tiers = [("code", "contamination_code_similarity")] + ([("semantic", "contamination_similarity")] if semantic
                                                            else [])
    chosen = {}
    for tier, column in tiers:
        scores = cols[column].to_list()
        threshold, info = tune(records, scores)
        chosen[tier] = threshold
        out["tiers"][tier] = {"threshold": threshold, **info,
                              **prf(labels, on_held([s is not None and s >= threshold for s in scores]))}
    flags = [bool(n) or any((cols[c][i] or 0) >= chosen[t] for t, c in tiers) for i, n in
             enumerate(cols["contamination_ngram"].to_list())]
    out["tiers"]["all (chosen thresholds)"] = prf(labels, on_held(flags))
    out["verbatim_found"] = f"{sum(f for r, f in zip(records, flags) if r.kind == 'verbatim')} of " \
                            f"{sum(r.kind == 'verbatim' for r in records)}"
    out["clean_flagged"] = [{"text": (r.instruction + " / " + r.output)[:160], "item": cols["contamination_item"][i]}
                            for i, (r, f) in enumerate(zip(records, flags)) if f and r.item is None][:20]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-semantic", action="store_true", help="skip the embedding tier (minutes on 2 cores)")
    parser.add_argument("--gsm8k-items", type=int, default=200, help="GSM8K test questions rephrased")
    args = parser.parse_args()
    clean = codealpaca(SHARED_DATA)
    report = {
        "code": evaluate("code", code_devset(clean, human_eval()), ["human-eval"], not args.no_semantic),
        "gsm8k": evaluate("gsm8k", gsm8k_devset(clean, gsm8k(SHARED_DATA), n=args.gsm8k_items),
                          [str(SHARED_DATA / "benchmarks/gsm8k_test.jsonl")], not args.no_semantic),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
