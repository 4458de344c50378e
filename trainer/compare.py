"""Compare two versions: two training runs with the same config, seed and evaluation sets.

The only thing that differs between the runs is the data, so the differences in their metrics are
what the data change did (up to run-to-run noise, which a fixed seed removes on one machine but not
across hardware). `delta` is b - a for every numeric metric both runs have: a negative
`reference_loss` delta means version b's model fits the held-out reference set better.

Besides the JSON, compare writes a self-contained HTML report (trainer/report.py): both loss
curves, the metric deltas, the records added and removed, and both versions' audit summaries.
With `judge=True` an LLM judge (the project's LLM client) picks the better of A's and B's answers
to the reference prompts; `judge.a_win_rate` (ties count half) is in the result and in `delta`.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import uuid
from pathlib import Path
from typing import Any

from assay.core.errors import AssayError
from assay.core.llm import LLMClient, LLMConfig, Request
from assay.core.store import Store

from .config import TrainConfig
from .report import write
from .train import resolve_reference, train

JUDGE_PROMPT = """You are judging two answers to the same request. Decide which answer is more correct and more helpful.

Request:
{prompt}

Answer 1:
{first}

Answer 2:
{second}

Reply with one character: 1 if Answer 1 is better, 2 if Answer 2 is better, 0 if they are equally good."""


def compare(store: Store, a: str, b: str, config: TrainConfig | None = None, *,
            show_progress: bool | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """Train on a, then on b, with one config; return {"config", "data", "runs": {"a", "b"}, "delta",
    "report"} (plus "judge" when config.judge). The HTML report goes to `out`, by default
    <workspace>/runs/compare/<id>/report.html."""
    config = config or TrainConfig.from_preset("cpu-smoke")
    config.validate()
    ma, mb = store.resolve(a), store.resolve(b)  # fail on a bad ref before any training starts
    if config.reference:  # a file is imported once, so both runs are scored on the same version
        resolve_reference(store, config)
    if config.judge and not (config.reference and config.rouge_records):
        raise AssayError("compare: the judge compares answers to the reference prompts: give a reference set "
                         "and rouge_records > 0")
    diff = store.diff(ma.id, mb.id)
    runs = {}
    for key, manifest in (("a", ma), ("b", mb)):
        runs[key] = train(store, manifest.id, config, show_progress=show_progress, side=key)
    result: dict[str, Any] = {
        "config": config.to_dict(),
        "data": {"a": diff["a"], "b": diff["b"], "added": diff["added"], "removed": diff["removed"],
                 "unchanged": diff["unchanged"]},
        "runs": {key: _brief(run) for key, run in runs.items()},
        "delta": delta(runs["a"]["metrics"], runs["b"]["metrics"]),
    }
    if config.judge:
        result["judge"] = judge(store, runs, config)
        if result["judge"]["a_win_rate"] is not None:
            result["delta"]["judge_a_win_rate"] = result["judge"]["a_win_rate"]
    if out is None:
        stamp = f"{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        out = Path(store.root) / "runs" / "compare" / stamp / "report.html"
    result["report"] = str(out)
    write(store, result, runs, out)
    return result


def _brief(run: dict[str, Any]) -> dict[str, Any]:
    return {k: run[k] for k in ("run_id", "version", "ref", "records", "path", "weights_path", "metrics", "curve")}


def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """b - a for each numeric metric present in both (timings included: they are measurements too)."""
    out = {}
    for key, va in a.items():
        vb = b.get(key)
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool):
            out[key] = vb - va
    return out


def parse_verdict(reply: str) -> str:
    """'1', '2' or '0' (tie): the first such digit standing alone in the judge's reply."""
    found = re.search(r"(?<![\d.])([012])(?![\d.])", reply)
    if not found:
        raise ValueError(f"no verdict (1, 2 or 0) in the reply {reply[:80]!r}")
    return found.group(1)


def judge(store: Store, runs: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    """Ask the LLM which of A's and B's answers is better, prompt by prompt. Which answer is shown
    first is drawn per prompt from the seed, so a judge that favours a position favours neither run."""
    ga = runs["a"]["eval"]["reference"]["generations"]
    gb = runs["b"]["eval"]["reference"]["generations"]
    rng = random.Random(config.seed)
    requests, a_first = [], []
    for i, (x, y) in enumerate(zip(ga, gb)):
        first_is_a = rng.random() < 0.5
        first, second = (x["answer"], y["answer"]) if first_is_a else (y["answer"], x["answer"])
        a_first.append(first_is_a)
        requests.append(Request(key=f"item-{i}", parse=parse_verdict, messages=[{"role": "user", "content":
                                JUDGE_PROMPT.format(prompt=x["prompt"], first=first, second=second)}]))
    llm = LLMConfig(temperature=0.0, max_tokens=8, seed=config.seed,
                    **({"base_url": config.judge_base_url} if config.judge_base_url else {}))
    run_id = f"judge-{runs['a']['run_id'][-6:]}-{runs['b']['run_id'][-6:]}"
    with LLMClient(llm) as client:
        results = client.run_batch(run_id, requests, store, show_progress=False)
    wins = {"a": 0, "b": 0, "tie": 0}
    for res, first_is_a in zip(results, a_first):
        if not res.ok:
            continue
        if res.value == "0":
            wins["tie"] += 1
        else:
            wins["a" if (res.value == "1") == first_is_a else "b"] += 1
    judged = sum(wins.values())
    return {"items": len(requests), "judged": judged, "a_wins": wins["a"], "b_wins": wins["b"], "ties": wins["tie"],
            "a_win_rate": (wins["a"] + 0.5 * wins["tie"]) / judged if judged else None, "llm_run": run_id}
