"""The one record type.

A record is either Alpaca-style (instruction, input, output) or chat (`messages`, any number of
turns), plus provenance (where it came from and how it was made) and free metadata.

Its id is a hash of its *content* only (instruction, input, output, messages): the same text
imported from two files, or kept by two versions, is the same record, so anything computed from it
(embeddings, audit scores) can be cached by id. Provenance and metadata describe a row, not the
record, and may differ between rows that share an id (a version may hold the same record twice:
finding that is the exact-duplicate auditor's job, not the store's).

On disk, records are Arrow/Parquet rows with the columns of `RECORD_SCHEMA`; nested free-form
values (sampling parameters, metadata) are JSON text so that rows of any origin share one schema.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pydantic import BaseModel, Field

if TYPE_CHECKING:  # polars is imported where it is used: records load without it
    import polars as pl

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])

RECORD_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("instruction", pa.string()),
    ("input", pa.string()),
    ("output", pa.string()),
    ("messages", pa.list_(MESSAGE_TYPE)),  # null for Alpaca-style records
    ("source", pa.string()),  # file, dataset id or generator run the row came from
    ("source_row", pa.int64()),  # 1-based line/row/element in that source, when there is one
    ("generator", pa.string()),  # "import", or the generator's name
    ("template", pa.string()),
    ("model", pa.string()),
    ("sampling_params", pa.string()),  # JSON object text
    ("parent_ids", pa.list_(pa.string())),  # records this one was derived from
    ("metadata", pa.string()),  # JSON object text: every source column Assay does not model
])

COLUMNS = RECORD_SCHEMA.names
CONTENT_FIELDS = ("instruction", "input", "output", "messages")


def record_id(instruction: str, input: str, output: str, messages: list[dict] | None) -> str:
    """The content hash. Its canonical form is the compact JSON array [instruction, input, output,
    messages-or-null], with messages reduced to {"role", "content"}: stable across Python and
    library versions, and unambiguous (no separator can be forged by the text)."""
    canonical = json.dumps(
        [instruction, input, output,
         None if messages is None else [{"role": m["role"], "content": m["content"]} for m in messages]],
        ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode("utf-8"), digest_size=16).hexdigest()


class Message(BaseModel):
    role: str = Field(description="system, user, assistant (or any role the source uses)")
    content: str


class Provenance(BaseModel):
    source: str | None = Field(None, description="file path, Hugging Face id or generator run id")
    source_row: int | None = Field(None, description="1-based line, row or element in the source")
    generator: str | None = Field(None, description="'import' or the generator that made the record")
    template: str | None = Field(None, description="id of the prompt template used, if any")
    model: str | None = Field(None, description="model that wrote the record, if any")
    sampling_params: dict[str, Any] = Field(default_factory=dict, description="temperature, top_p, seed, ...")
    parent_ids: list[str] = Field(default_factory=list, description="ids of the records it was derived from")


class Record(BaseModel):
    """One instruction record. Build it with keyword arguments; `id` is derived, never given."""

    instruction: str = ""
    input: str = ""
    output: str = ""
    messages: list[Message] | None = None
    provenance: Provenance = Field(default_factory=Provenance)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def id(self) -> str:
        return record_id(self.instruction, self.input, self.output,
                         None if self.messages is None else [m.model_dump() for m in self.messages])

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def to_row(self) -> dict[str, Any]:
        """The storage row (RECORD_SCHEMA's columns)."""
        p = self.provenance
        return {
            "id": self.id, "instruction": self.instruction, "input": self.input, "output": self.output,
            "messages": None if self.messages is None else [m.model_dump() for m in self.messages],
            "source": p.source, "source_row": p.source_row, "generator": p.generator,
            "template": p.template, "model": p.model,
            "sampling_params": dump_json(p.sampling_params), "parent_ids": list(p.parent_ids),
            "metadata": dump_json(self.metadata),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Record":
        return cls(
            instruction=row["instruction"], input=row["input"], output=row["output"],
            messages=row["messages"], metadata=json.loads(row["metadata"] or "{}"),
            provenance=Provenance(
                source=row["source"], source_row=row["source_row"], generator=row["generator"],
                template=row["template"], model=row["model"],
                sampling_params=json.loads(row["sampling_params"] or "{}"),
                parent_ids=row["parent_ids"] or []))


def dump_json(value: Any) -> str:
    # default=str: values Arrow can hold but JSON cannot (dates, decimals) survive as text
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)


def export_row(row: dict[str, Any]) -> dict[str, Any]:
    """A storage row as a user's training file wants it: the Alpaca or chat fields, then the
    metadata keys as top-level columns again (so import -> export gives the source rows back)."""
    if row["messages"] is not None:
        out: dict[str, Any] = {"messages": [{"role": m["role"], "content": m["content"]} for m in row["messages"]]}
    else:
        out = {"instruction": row["instruction"], "input": row["input"], "output": row["output"]}
    for key, value in json.loads(row["metadata"] or "{}").items():
        out.setdefault(key, value)
    return out


def with_text(frame: "pl.DataFrame") -> "pl.DataFrame":
    """Add the text views auditors read: `prompt` (instruction, then input; for chat, the user turns),
    `response` (output; for chat, the assistant turns) and `text` (both). Vectorised: no Python loop."""
    import polars as pl

    def turns(role: str) -> pl.Expr:
        return (pl.col("messages").list.eval(
            pl.when(pl.element().struct.field("role") == role).then(pl.element().struct.field("content")))
            .list.drop_nulls().list.join("\n\n"))

    is_chat = pl.col("messages").is_not_null()
    alpaca_prompt = pl.when(pl.col("input") == "").then(pl.col("instruction")).otherwise(
        pl.col("instruction") + "\n\n" + pl.col("input"))
    return frame.with_columns(
        prompt=pl.when(is_chat).then(turns("user")).otherwise(alpaca_prompt),
        response=pl.when(is_chat).then(turns("assistant")).otherwise(pl.col("output")),
    ).with_columns(text=pl.when(pl.col("response") == "").then(pl.col("prompt"))
                   .otherwise(pl.col("prompt") + "\n\n" + pl.col("response")))
