"""Agreement between annotators: Cohen's kappa for two, Fleiss' for more, and per-annotator figures."""

from __future__ import annotations

import json
import statistics
from typing import Any

import numpy as np

from ..store import Store
from .queue import LABELS, _read_snapshot
from .sessions import LabelSchema
from .users import User


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa of an items x categories table of rating counts (every item rated n >= 2 times).
    None when chance agreement is total (every rating in one category)."""
    counts = np.asarray(counts, dtype=float)
    n_items, n = counts.shape[0], counts[0].sum()
    if n_items == 0 or n < 2 or not np.all(counts.sum(axis=1) == n):
        raise ValueError("fleiss_kappa needs the same number (>= 2) of ratings for every item")
    p_cat = counts.sum(axis=0) / (n_items * n)
    p_item = (np.square(counts).sum(axis=1) - n) / (n * (n - 1))
    p_bar, p_e = p_item.mean(), np.square(p_cat).sum()
    return None if np.isclose(p_e, 1.0) else float((p_bar - p_e) / (1 - p_e))


def _kappa(by_item: dict[str, dict[str, str]], categories: list[str]) -> dict[str, Any]:
    """Cohen's kappa when the overlapping records were rated by two annotators, Fleiss' when by more."""
    rated = {rid: r for rid, r in by_item.items() if len(r) >= 2}
    raters = sorted({a for r in rated.values() for a in r})
    out: dict[str, Any] = {"method": None, "kappa": None, "items": 0, "annotators": raters,
                           "observed_agreement": None, "note": ""}
    if not rated:
        out["note"] = "no record has two decisions yet"
        return out
    agree = sum(1 for r in rated.values() if len(set(r.values())) == 1)
    out["observed_agreement"] = agree / len(rated)
    if len(raters) == 2:
        # imported here: scikit-learn takes about a second to import, and the CLI and the app import
        # this package on every start; only a two-annotator agreement needs it
        from sklearn.metrics import cohen_kappa_score

        a, b = raters
        ya, yb = [r[a] for r in rated.values()], [r[b] for r in rated.values()]
        out.update(method="cohen", items=len(rated))
        if len(set(ya) | set(yb)) < 2:
            out["note"] = "every decision has the same label: kappa is undefined"
        else:
            out["kappa"] = float(cohen_kappa_score(ya, yb, labels=categories))
        return out
    # Fleiss needs the same number of ratings per record: use the most common count
    sizes = [len(r) for r in rated.values()]
    n = max(set(sizes), key=lambda k: (sizes.count(k), k))
    table = np.array([[list(r.values()).count(c) for c in categories] for r in rated.values() if len(r) == n])
    out.update(method="fleiss", items=len(table))
    if len(table) < len(rated):
        out["note"] = f"{len(rated) - len(table)} records with other than {n} decisions left out"
    out["kappa"] = fleiss_kappa(table)
    if out["kappa"] is None:
        out["note"] = "every decision has the same label: kappa is undefined"
    return out


def agreement(store: Store, actor: User, session: str) -> dict[str, Any]:
    """Kappa on accept/reject (and on the category, when the schema has categories), and per
    annotator: decisions, accept rate, edits, median seconds per decision."""
    s, items, current, _ = _read_snapshot(store, actor, session, "see agreement")
    schema = LabelSchema(**json.loads(s["label_schema"]))
    labels = {rid: {d["annotator"]: d["label"] for d in ds} for rid, ds in current.items()}
    out: dict[str, Any] = {"label": _kappa(labels, list(LABELS))}
    if schema.categories:
        cats = {rid: {d["annotator"]: d["category"] for d in ds} for rid, ds in current.items()}
        out["category"] = _kappa(cats, schema.categories)
    per: dict[str, dict[str, Any]] = {}
    for ds in current.values():
        for d in ds:
            p = per.setdefault(d["annotator"], {"decisions": 0, "accepted": 0, "edited": 0, "_secs": []})
            p["decisions"] += 1
            p["accepted"] += d["label"] == "accept"
            p["edited"] += d["edit"] is not None
            if d["seconds"] is not None:
                p["_secs"].append(d["seconds"])
    for p in per.values():
        secs = p.pop("_secs")
        p["accept_rate"] = p["accepted"] / p["decisions"]
        p["median_seconds"] = statistics.median(secs) if secs else None
    out["annotators"] = dict(sorted(per.items()))
    return out


