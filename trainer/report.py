"""The comparison report: one self-contained HTML page (the JSON of the comparison beside it).

It puts the data difference next to the model difference: both runs' loss curves (a matplotlib PNG
inlined as a data URI, so the file opens offline), every metric of A and B with its delta, the
records added and removed (a few of each), the stored audit summaries of both versions, and a few
generated answers. Every piece of text (records, generations, names) goes through Jinja2's
autoescaping; nothing from the data reaches the page as HTML.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from assay.auditors.report import figure_png, flat_figures
from assay.core.audits import latest_audits
from assay.core.store import Store

TEMPLATE = Path(__file__).parent / "templates" / "compare.html.j2"
# metrics where a higher value is the better one (the rest: losses, perplexities, lower is better)
HIGHER_IS_BETTER = ("reference_rouge_l", "humaneval_pass@1")
SHOWN = ("train_loss", "train_loss_last", "reference_loss", "reference_perplexity", "reference_rouge_l",
         "forgetting_perplexity", "humaneval_pass@1")


def _curves(runs: dict[str, Any]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(run.get("curve") for run in runs.values()):
        return None
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for key, color in (("a", "tab:blue"), ("b", "tab:orange")):
        curve = runs[key].get("curve") or []
        ax.plot([p["step"] for p in curve], [p["loss"] for p in curve], color=color,
                label=f"{key.upper()}: {runs[key]['ref']}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (response tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    return figure_png(fig)


def metric_rows(a: dict[str, Any], b: dict[str, Any], delta: dict[str, float]) -> list[dict[str, Any]]:
    names = [k for k in SHOWN if k in a or k in b]
    names += sorted(k for k in set(a) | set(b) if k.startswith("benchmark_perplexity/"))
    names += sorted(k for k in delta if k not in names)
    rows = []
    for name in names:
        d = delta.get(name)
        verdict = ""
        if d and not name.endswith(("_s", "_per_s")) and name not in ("steps", "epochs", "trainable_params"):
            better = d > 0 if name in HIGHER_IS_BETTER else d < 0
            verdict = "better" if better else "worse"
        rows.append({"name": name, "a": a.get(name, "–"), "b": b.get(name, "–"),
                     "delta": d if d is not None else "–", "verdict": verdict})
    return rows


def _samples(runs: dict[str, Any], n: int = 4) -> list[dict[str, str]]:
    ga = ((runs["a"].get("eval") or {}).get("reference") or {}).get("generations") or []
    gb = ((runs["b"].get("eval") or {}).get("reference") or {}).get("generations") or []
    return [{"prompt": x["prompt"], "reference": x["reference"], "a": x["answer"], "b": y["answer"]}
            for x, y in zip(ga[:n], gb[:n])]


def render(store: Store, result: dict[str, Any], runs: dict[str, Any], *, samples: int = 5) -> str:
    """The HTML page of a comparison (`result`: compare's JSON; `runs`: the two full run records)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    data = dict(result["data"])
    more = store.diff(data["a"]["version"], data["b"]["version"], sample=samples)
    data["added_records"], data["removed_records"] = more["added_records"], more["removed_records"]
    audits = {key: {a["auditor"]: flat_figures(a["summary"]) for a in latest_audits(store, data[key]["version"])}
              for key in ("a", "b")}
    env = Environment(loader=FileSystemLoader(TEMPLATE.parent), autoescape=select_autoescape(default=True))
    env.filters["num"] = lambda v: (f"{v:.4g}" if isinstance(v, float) else v)
    return env.get_template(TEMPLATE.name).render(
        config=result["config"], runs=result["runs"], data=data, audits=audits, judge=result.get("judge"),
        metrics=metric_rows(runs["a"]["metrics"], runs["b"]["metrics"], result["delta"]),
        curves=_curves(runs), samples=_samples(runs))


def write(store: Store, result: dict[str, Any], runs: dict[str, Any], out: str | Path) -> Path:
    """Write the page to `out` and the comparison's JSON beside it (same name, .json); both are
    written to temporary names and renamed, so a reader never sees half a report."""
    import os
    import uuid

    html = render(store, result, runs)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, text in ((path, html), (path.with_suffix(".json"),
                                        json.dumps(result, ensure_ascii=False, indent=1, default=str))):
        tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    return path
