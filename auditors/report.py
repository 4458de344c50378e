"""The dataset report card: one self-contained HTML page (and its JSON) per version, or two versions
side by side. It reads what the auditors stored (never recomputes them) plus the version's size and
lengths, which are cheap. Plots are matplotlib PNGs inlined as data URIs, so the file opens offline;
every piece of record text goes through Jinja2's autoescaping, never into the page as HTML.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from assay.core.audits import audit_detail, latest_audits
from assay.core.records import with_text
from assay.core.store import Store

TEMPLATE = Path(__file__).parent / "templates" / "report.html.j2"


def _lengths(values: pl.Series) -> dict[str, Any]:
    arr = values.to_numpy()
    if arr.size == 0:
        return {"mean": 0.0, "p50": 0, "p90": 0, "p99": 0, "max": 0}
    return {"mean": float(arr.mean()), "p50": int(np.percentile(arr, 50)), "p90": int(np.percentile(arr, 90)),
            "p99": int(np.percentile(arr, 99)), "max": int(arr.max())}


PLOT_SAMPLE = 100_000  # records the length histograms are drawn from (every record counts in the figures)


def version_card(store: Store, ref: str) -> dict[str, Any]:
    """Everything the report shows about one version, as JSON-able data. The version is read one
    part at a time, keeping only lengths and ids, so a 10M-record version fits in memory."""
    manifest = store.resolve(ref)
    prompt, response, words, ids = [], [], [], []
    chat = 0
    for part in store.iter_frames(manifest, ["id", "instruction", "input", "output", "messages"]):
        frame = with_text(part)
        prompt.append(frame["prompt"].str.len_chars())
        response.append(frame["response"].str.len_chars())
        words.append(frame["response"].str.count_matches(r"\S+"))
        ids.append(frame["id"])
        chat += int(frame["messages"].is_not_null().sum())
    prompt_chars, response_chars = _concat(prompt, pl.UInt32), _concat(response, pl.UInt32)
    sample = np.random.default_rng(0).permutation(prompt_chars.len())[:PLOT_SAMPLE]
    card: dict[str, Any] = {
        "version": manifest.summary(),
        "code_version": manifest.code_version,
        "size": {"records": manifest.records, "unique_records": _concat(ids, pl.String).n_unique(),
                 "chat_records": chat},
        "lengths": {"prompt_chars": _lengths(prompt_chars), "response_chars": _lengths(response_chars),
                    "response_words": _lengths(_concat(words, pl.UInt32))},
        "audits": {a["auditor"]: a["summary"] for a in latest_audits(store, manifest)},
        "_prompt_chars": prompt_chars.gather(sample).to_list(),
        "_response_chars": response_chars.gather(sample).to_list(),
    }
    evidence = audit_detail(store, manifest, "contamination", "evidence")
    if evidence is not None:
        card["contamination_evidence"] = evidence.head(20).to_dicts()
    calibration = audit_detail(store, manifest, "minhash", "calibration")
    if calibration is not None:
        card["minhash_calibration"] = calibration.head(200).to_dicts()
    embedding_map = audit_detail(store, manifest, "diversity", "map")
    if embedding_map is not None:
        card["_map"] = embedding_map.head(5000).to_dicts()
    return card


def _concat(pieces: list[pl.Series], dtype) -> pl.Series:
    return pl.concat(pieces) if pieces else pl.Series([], dtype=dtype)


# ---- plots --------------------------------------------------------------------------------------

def figure_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plots(card: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, str] = {}
    fig, axes = plt.subplots(1, 2, figsize=(9, 2.8))
    for ax, key, title in ((axes[0], "_prompt_chars", "prompt length (chars)"),
                           (axes[1], "_response_chars", "response length (chars)")):
        values = np.asarray(card[key]) if card[key] else np.zeros(1)
        ax.hist(np.clip(values, 0, np.percentile(values, 99) or 1), bins=40, color="#4c72b0")
        ax.set_title(title, fontsize=9)
    plots["lengths"] = figure_png(fig)

    rates = {name: a.get("duplicate_rate") for name, a in card["audits"].items() if "duplicate_rate" in a}
    if rates:
        fig, ax = plt.subplots(figsize=(4.5, 2.4))
        ax.barh(list(rates), [100 * v for v in rates.values()], color="#dd8452")
        ax.set_xlabel("% of records marked duplicate", fontsize=8)
        plots["duplicates"] = figure_png(fig)

    quality = card["audits"].get("quality", {})
    flags = quality.get("flags") if isinstance(quality.get("flags"), dict) else {}
    flag_rates = {name: f["rate"] for name, f in flags.items() if isinstance(f, dict) and "rate" in f}
    if flag_rates:
        fig, ax = plt.subplots(figsize=(4.5, 2.8))
        ax.barh(list(flag_rates), [100 * v for v in flag_rates.values()], color="#55a868")
        ax.set_xlabel("% of records flagged", fontsize=8)
        plots["quality"] = figure_png(fig)

    if card.get("minhash_calibration"):
        cal = card["minhash_calibration"]
        est = [r.get("estimated_jaccard", r.get("estimated")) for r in cal]
        true = [r.get("true_jaccard", r.get("true")) for r in cal]
        if all(v is not None for v in est + true):
            fig, ax = plt.subplots(figsize=(3.6, 3.2))
            ax.scatter(true, est, s=8)
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
            ax.set_xlabel("true Jaccard", fontsize=8)
            ax.set_ylabel("MinHash estimate", fontsize=8)
            plots["calibration"] = figure_png(fig)

    if card.get("_map"):
        pts = card["_map"]
        fig, ax = plt.subplots(figsize=(4.2, 3.6))
        ax.scatter([p["x"] for p in pts], [p["y"] for p in pts], c=[p.get("cluster", 0) for p in pts], s=4,
                   cmap="tab20")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("embedding map, coloured by cluster", fontsize=9)
        plots["map"] = figure_png(fig)
    return plots


# ---- the page -----------------------------------------------------------------------------------

def _public(card: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in card.items() if not k.startswith("_")}


def build_report(store: Store, ref: str, compare: str | None = None) -> dict[str, Any]:
    cards = [version_card(store, ref)] + ([version_card(store, compare)] if compare else [])
    report: dict[str, Any] = {"versions": [_public(c) for c in cards]}
    if compare:
        report["diff"] = store.diff(compare, ref)  # the compared version is the baseline
    report["_plots"] = [_plots(c) for c in cards]
    return report


def flat_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """The scalar figures of an auditor summary (nested dicts flattened one level), for tables."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if key in ("config", "examples"):
            continue
        if isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
        elif isinstance(value, dict) and len(value) <= 6 and all(
                isinstance(v, (int, float, str, bool)) or v is None for v in value.values()):  # short ones only
            for sub, v in value.items():
                out[f"{key}.{sub}"] = v
    return out


def render_html(report: dict[str, Any]) -> str:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATE.parent), autoescape=select_autoescape(default=True))
    env.filters["num"] = lambda v: (f"{v:.4g}" if isinstance(v, float) else v)
    env.filters["pretty"] = lambda v: json.dumps(v, ensure_ascii=False, indent=1, default=str)
    auditors = sorted({name for card in report["versions"] for name in card["audits"]})
    figures = {name: [flat_figures(card["audits"].get(name, {})) for card in report["versions"]] for name in auditors}
    return env.get_template(TEMPLATE.name).render(report=report, auditors=auditors, figures=figures,
                                                  plots=report["_plots"])


def write_report(store: Store, ref: str, out: str, compare: str | None = None) -> dict[str, Any]:
    report = build_report(store, ref, compare)
    html = render_html(report)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    json_path = out_path.with_suffix(".json")
    out_path.write_text(html, encoding="utf-8")
    json_path.write_text(json.dumps(public, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    return {"html": str(out_path), "json": str(json_path),
            "versions": [c["version"]["ref"] for c in report["versions"]],
            "auditors": sorted({a for c in report["versions"] for a in c["audits"]})}
