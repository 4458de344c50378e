"""Shared pieces of the Streamlit pages: the workspace's store, a version picker, safe rendering.

Pages are thin: widgets and rendering only; every action is a library call the CLI also has.
Untrusted text (imported rows, LLM replies) is shown with st.text / st.code / st.dataframe, never
as HTML or markdown.
"""

from __future__ import annotations

import os

import polars as pl
import streamlit as st

from assay.core.records import RECORD_SCHEMA
from assay.core.store import Store, default_workspace

# record rows that come as dicts (a diff's samples) are framed with the store's own column types
RECORD_FRAME_SCHEMA = pl.from_arrow(RECORD_SCHEMA.empty_table()).schema


def workspace() -> str:
    return os.environ.get("ASSAY_WORKSPACE") or default_workspace()


@st.cache_resource(show_spinner=False)
def _store_for(root: str) -> Store:
    return Store(root)


def get_store() -> Store:
    """The workspace's Store, one per server process (the catalog is SQLite in WAL mode)."""
    return _store_for(workspace())


def version_picker(label: str, key: str, *, default: str | None = None) -> str | None:
    """A select box over every version in the workspace, newest first; returns the version id or None."""
    rows = sorted(get_store().versions(), key=lambda r: str(r["created_at"]), reverse=True)
    if not rows:
        st.info("No versions yet: import a file or run the demo on the Datasets page.")
        return None
    ids = [r["id"] for r in rows]
    labels = {r["id"]: f"{r['ref']}  ·  {r['records']} records  ·  {r['id'][:12]}" for r in rows}
    index = ids.index(default) if default in ids else 0
    return st.selectbox(label, ids, index=index, key=key, format_func=lambda v: labels.get(v, v))


# ---- helpers the Datasets and Review pages share ------------------------------------------------

# Streamlit's own limit is set by `assay app` (--server.maxUploadSize); the uploader says it.
UPLOAD_LIMIT_MB = int(os.environ.get("ASSAY_UPLOAD_LIMIT_MB", "200"))


def show_error(exc: Exception) -> None:
    """A user error: one line, as plain text (messages can quote file names and record text)."""
    st.error("That did not work:")
    st.code(str(exc), language=None)


def dot_label(text: str) -> str:
    """A DOT quoted string: backslashes and quotes escaped, newlines as DOT line breaks, so a label
    can never end the string and add graph syntax (nor become an HTML-like <label>)."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def lineage_dot(steps: list[dict]) -> str:
    """The lineage graph (parents -> children) as DOT, from `Store.lineage`'s steps."""
    lines = ["digraph lineage {", "  rankdir=LR;", '  node [shape=box, style="rounded", fontname="sans-serif"];']
    for s in steps:
        label = f"{s['ref']}\n{s['operation']} · {s['records']} records"
        lines.append(f"  {dot_label(s['version'])} [label={dot_label(label)}];")
        for parent in s["parents"]:
            lines.append(f"  {dot_label(parent)} -> {dot_label(s['version'])};")
    lines.append("}")
    return "\n".join(lines)


def records_table(df):
    """Record rows as a frame for st.dataframe (drawn as text on a canvas, never HTML): the text
    fields first, nested columns left to the record view; a chat record shows its turn count and
    first turn in place of the empty instruction."""
    import polars as pl

    if "messages" in df.columns and "instruction" in df.columns:
        turns = pl.col("messages").list.len().cast(pl.String)
        first = pl.col("messages").list.first().struct.field("content")
        df = df.with_columns(instruction=pl.when(pl.col("messages").is_not_null() & (pl.col("instruction") == ""))
                             .then(pl.concat_str([pl.lit("["), turns, pl.lit(" turns] "), first]))
                             .otherwise(pl.col("instruction")))
    hidden = {"messages", "parent_ids", "metadata", "sampling_params", "template"}
    first_cols = [c for c in ("_pos", "instruction", "input", "output", "source", "generator") if c in df.columns]
    return df.select(first_cols + [c for c in df.columns if c not in first_cols and c not in hidden])
