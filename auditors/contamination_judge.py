"""The contamination auditor's judge tier (llm-decontaminator's second stage): an LLM asked, for each
candidate pair of a record and a benchmark item, whether they are the same problem.

Candidates come from both similarity tiers: the record's nearest item by embedding (cosine at least
`judge_min_similarity`) and its best items by code Jaccard (within 0.2 of `code_threshold`: the same
lists that give each item its top records). The prompt follows the item's data type, in the spirit of
llm-decontaminator's per-benchmark prompts: `code` (the item has a program: a solution or code in its
prompt), `math` (a word problem: two or more numbers) or `knowledge` (anything else).

Calls go through the project's LLM client: any OpenAI-compatible endpoint, journalled and cached
under a run id that names the version and the prompts, so a re-audit asks nothing twice and an
interrupted one resumes. A record's verdict: same when any of its pairs is judged the same; different
when every pair was judged different; unjudged (null) when a call failed and no pair said same, so a
failure never reads as clean. Every pair's verdict and raw reply are kept in the `judge` detail.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import polars as pl

from .base import AuditContext, Rows
from .contamination_code import item_code

TEMPLATES = Path(__file__).parent / "templates"
DATA_TYPES = ("code", "math", "knowledge")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def parse_verdict(reply: str) -> bool:
    """The judge's answer: JSON {"same": bool} where the endpoint gives it, else a leading yes/no."""
    from assay.core.llm import parse_json

    try:
        value = parse_json(reply)
        if isinstance(value, dict) and isinstance(value.get("same"), bool):
            return value["same"]
    except Exception:  # not JSON: read the words
        pass
    match = re.search(r"\b(yes|no|true|false)\b", (reply or "").lower())
    if not match:
        raise ValueError("the judge answered neither yes nor no")
    return match.group(1) in ("yes", "true")


def data_type(text: str, code: str | None) -> str:
    if item_code(text, code).source != "none":
        return "code"
    return "math" if len(_NUMBER.findall(text)) >= 2 else "knowledge"


def candidates(found: pl.DataFrame, items: pl.DataFrame, cfg) -> pl.DataFrame:
    """(row, benchmark, item, via, similarity) pairs to judge, one per record and item."""
    parts = []
    if cfg.semantic:
        parts.append(found.filter(pl.col("contamination_similarity") >= cfg.judge_min_similarity).select(
            "row", pl.col("nearest_benchmark").alias("benchmark"), pl.col("nearest_item").alias("item"),
            pl.lit("semantic").alias("via"), pl.col("contamination_similarity").alias("similarity")))
    if cfg.code:
        index = items.with_row_index("idx").select(pl.col("idx").cast(pl.Int32), "benchmark", "item")
        code = found.select("row", "code_candidates", "code_candidate_scores").explode(
            ["code_candidates", "code_candidate_scores"]).drop_nulls("code_candidates")
        parts.append(code.join(index, left_on="code_candidates", right_on="idx", how="left").select(
            "row", "benchmark", "item", pl.lit("code").alias("via"),
            pl.col("code_candidate_scores").cast(pl.Float64).alias("similarity")))
    if not parts:
        return pl.DataFrame(schema={"row": pl.UInt32, "benchmark": pl.String, "item": pl.String, "via": pl.String,
                                    "similarity": pl.Float64})
    both = pl.concat([p.with_columns(pl.col("row").cast(pl.UInt32)) for p in parts])
    return both.sort("row", maintain_order=True).unique(["row", "benchmark", "item"], keep="first",
                                                         maintain_order=True)


def judge(found: pl.DataFrame, rows: Rows, items: pl.DataFrame, cfg, ctx: AuditContext
          ) -> tuple[pl.Series, dict, pl.DataFrame]:
    """(per-record verdict column, summary, one row per judged pair with its verdict and raw reply)."""
    from jinja2 import Template

    from assay.core.llm import LLMClient, LLMConfig, Request

    info = {(b, i): (t, c) for b, i, t, c in items.select("benchmark", "item", "text", "code").iter_rows()}
    pairs = candidates(found, items, cfg)
    read = rows.at(pairs["row"].to_numpy(), ["id", cfg.column]) if pairs.height else None
    pairs = pairs.with_columns(id=read["id"] if read is not None else pl.Series([], dtype=pl.String),
                               record_text=read[cfg.column] if read is not None else pl.Series([], dtype=pl.String))
    sources = {t: (TEMPLATES / f"contamination_judge_{t}.j2").read_text(encoding="utf-8") for t in DATA_TYPES}
    prompts = {t: Template(s) for t, s in sources.items()}
    kinds, requests = [], []
    for r in pairs.iter_rows(named=True):
        text, code = info[(r["benchmark"], r["item"])]
        kind = data_type(text, code)
        kinds.append(kind)
        shown = item_code(text, code).code if kind == "code" and code else text
        requests.append(Request(key=f"{r['id']}:{r['benchmark']}:{r['item']}", messages=[{"role": "user", "content":
                                prompts[kind].render(record=(r["record_text"] or "")[:4000], item=shown[:4000])}],
                                params={"max_tokens": 64}, parse=parse_verdict))
    # the prompts are part of the run: editing one re-asks instead of resuming with the old verdicts
    tag = hashlib.blake2b("".join(sources[t] for t in DATA_TYPES).encode("utf-8"), digest_size=4).hexdigest()
    run_id = f"contamination-judge-{ctx.version_id[:16]}-{tag}"
    llm = LLMConfig(**{k: v for k, v in (("base_url", cfg.judge_base_url), ("model", cfg.judge_model))
                       if v is not None}, temperature=0.0, seed=0)
    results = LLMClient(llm).run_batch(run_id, requests, ctx.store) if requests else []
    by_key = {r.key: r for r in results}
    verdicts, raws, errors = [], [], []
    for req in requests:
        res = by_key.get(req.key)
        ok = res is not None and res.ok
        verdicts.append(("same" if res.value else "different") if ok else "unjudged")
        raws.append(res.raw if res is not None else None)
        errors.append(None if ok else (res.error if res is not None else "no result"))
    detail = pairs.with_columns(data_type=pl.Series(kinds, dtype=pl.String),
                                verdict=pl.Series(verdicts, dtype=pl.String),
                                raw_reply=pl.Series(raws, dtype=pl.String),
                                error=pl.Series(errors, dtype=pl.String)).select(
        "row", "id", "benchmark", "item", "via", "similarity", "data_type", "verdict", "raw_reply", "error",
        "record_text")
    per_row = detail.group_by("row").agg(same=(pl.col("verdict") == "same").any(),
                                         failed=(pl.col("verdict") == "unjudged").any())
    values: list[bool | None] = [None] * found.height
    for row, same, failed in per_row.iter_rows():
        values[row] = True if same else (None if failed else False)
    series = pl.Series("contamination_judge", values, dtype=pl.Boolean)
    summary = {"run_id": run_id, "judged": len(requests), "same": verdicts.count("same"),
               "different": verdicts.count("different"), "failed": verdicts.count("unjudged"),
               "unjudged_records": per_row.filter(~pl.col("same") & pl.col("failed")).height,
               "by_data_type": {t: kinds.count(t) for t in DATA_TYPES if t in kinds}}
    return series, summary, detail
