"""Import: a file, a saved Hugging Face dataset or a Hub dataset id becomes a new version.

Sources are read row by row so that every problem can name its file and line (or row, or element);
the rows are normalised into the one record schema and written in segments as they stream, and the
version is committed only after the last row was read: a bad row anywhere leaves nothing behind.

Layouts recognised (per row, so a file exported from a mixed version comes back):
- chat: `messages` (OpenAI: role/content) or `conversations` (ShareGPT: from/value);
- Self-Instruct seed tasks: `instruction` + `instances` (a list of input/output): one record per instance;
- Alpaca-style: instruction / input / output, or common aliases of them (question/answer, prompt/
  response, ...) when the canonical column is absent, or any columns mapped with --map.
Every other column is kept as metadata.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import fsspec
import polars as pl
import pyarrow as pa

from assay.core.errors import AssayError, BadInput
from assay.core.progress import progress
from assay.core.records import RECORD_SCHEMA, dump_json, record_id
from assay.core.sources import ALIASES, FORMATS, Source, open_source
from assay.core.store import Manifest, Store, VersionWriter

TARGETS = ("instruction", "input", "output", "messages")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "bot": "assistant", "chatgpt": "assistant", "model": "assistant", "system": "system"}
LAYOUT_SAMPLE_ROWS = 1000
FAST_PATH_MAX_BYTES = 2 << 30
BATCH_ROWS = 50_000


@dataclass
class ImportConfig:
    mapping: dict[str, str] = field(default_factory=dict, metadata={
        "help": "record field -> source column, e.g. {'instruction': 'question', 'output': 'answer'}; "
                "fields: instruction, input, output, messages"})
    format: str | None = field(default=None, metadata={
        "help": f"one of {', '.join(FORMATS)}; default: from the path (a folder is a saved HF dataset, "
                "'hf:ID' a Hub dataset)"})
    split: str | None = field(default=None, metadata={
        "help": "split of a Hugging Face dataset (default: 'train', or the only split)"})
    fast_path: bool = field(default=True, metadata={
        "help": "read plain Alpaca files column-wise (same result, several times faster); off: row by row"})


def parse_mapping(text: str | None) -> dict[str, str]:
    """'instruction=question,output=answer' -> {'instruction': 'question', 'output': 'answer'}."""
    mapping: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in (text or "").split(","))):
        target, sep, column = (s.strip() for s in pair.partition("="))
        if not sep or not target or not column:
            raise AssayError(f"invalid --map entry {pair!r}: expected FIELD=COLUMN")
        if target not in TARGETS:
            raise AssayError(f"invalid --map field {target!r}: fields are {', '.join(TARGETS)}")
        mapping[target] = column
    return mapping


# ---- normalisation ----------------------------------------------------------------------------

@dataclass
class Layout:
    """Which source column feeds which record field, decided once per source."""

    fields: dict[str, str]  # record field -> source column
    seed_tasks: bool  # Self-Instruct: instruction + list of instances

    @classmethod
    def detect(cls, label: str, sample: list[dict], mapping: dict[str, str]) -> "Layout":
        columns: dict[str, None] = {}
        for row in sample:
            columns.update(dict.fromkeys(row))
        for target, column in mapping.items():
            if column not in columns:
                raise BadInput(label, f"--map {target}={column}: no column {column!r} "
                                      f"(columns: {', '.join(columns) or 'none'})")
        fields = dict(mapping)
        for target in TARGETS:
            if target not in fields:
                for candidate in (target, *ALIASES[target]):
                    if candidate in columns and candidate not in fields.values():
                        fields[target] = candidate
                        break
        seed_tasks = "instances" in columns and "instruction" in fields and "output" not in fields
        if "instruction" not in fields and "messages" not in fields:
            raise BadInput(label, "no instruction or messages column (looked for instruction, "
                                  f"{', '.join(ALIASES['instruction'])}, messages, conversations; columns: "
                                  f"{', '.join(columns) or 'none'}); map one with --map instruction=COLUMN")
        return cls(fields, seed_tasks)


class _Columns:
    """Column lists for a batch of storage rows (faster than building a dict per row)."""

    def __init__(self):
        self.cols: dict[str, list] = {name: [] for name in RECORD_SCHEMA.names}

    def __len__(self) -> int:
        return len(self.cols["id"])

    def append(self, instruction, input, output, messages, metadata, source, source_row) -> None:
        c = self.cols
        c["id"].append(record_id(instruction, input, output, messages))
        c["instruction"].append(instruction)
        c["input"].append(input)
        c["output"].append(output)
        c["messages"].append(messages)
        c["source"].append(source)
        c["source_row"].append(source_row)
        c["generator"].append("import")
        c["template"].append(None)
        c["model"].append(None)
        c["sampling_params"].append("{}")
        c["parent_ids"].append([])
        c["metadata"].append(dump_json(metadata))

    def table(self) -> pa.Table:
        return pa.table({f.name: pa.array(self.cols[f.name], type=f.type) for f in RECORD_SCHEMA})


def _text(value: Any, *, source: Source, pos: int, name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        got = "null" if value is None else type(value).__name__
        raise BadInput(source.label, f"must be text, got {got}", line=pos, field=name, unit=source.unit)
    return json.dumps(value)  # a number is fine as its JSON text ("42", "2.5")


def _messages(value: Any, *, source: Source, pos: int, name: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise BadInput(source.label, "must be a non-empty list of messages", line=pos, field=name, unit=source.unit)
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise BadInput(source.label, f"message {i} is not an object", line=pos, field=name, unit=source.unit)
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        if not isinstance(role, str):
            raise BadInput(source.label, f"message {i} has no role (or 'from')", line=pos, field=name, unit=source.unit)
        if content is None:
            content = ""  # e.g. an assistant turn that only calls a tool
        content = _text(content, source=source, pos=pos, name=f"{name}[{i}].content")
        out.append({"role": SHAREGPT_ROLES.get(role.lower(), role) if "from" in m else role, "content": content})
    return out


def _normalise(row: Any, pos: int, layout: Layout, source: Source, out: _Columns, provenance_source: str) -> None:
    if not isinstance(row, dict):
        raise BadInput(source.label, f"expected an object, got {type(row).__name__}", line=pos, unit=source.unit)
    f = layout.fields

    def metadata(*consumed: str | None) -> dict[str, Any]:
        # every column this row did not turn into a record field, except the empty columns of the
        # other layout (a chat row of a mixed file carries null instruction/output, and vice versa)
        other = [c for c in f.values() if c not in consumed and row.get(c) in (None, "")]
        return {k: v for k, v in row.items() if k not in consumed and k not in other}

    def text(column: str, *, required: bool) -> str:
        if column not in row or row[column] is None:
            if required:
                raise BadInput(source.label, "missing" if column not in row else "is null", line=pos,
                               field=column, unit=source.unit)
            return ""
        return _text(row[column], source=source, pos=pos, name=column)

    if "messages" in f and row.get(f["messages"]) is not None:
        messages = _messages(row[f["messages"]], source=source, pos=pos, name=f["messages"])
        out.append("", "", "", messages, metadata(f["messages"]), provenance_source, pos)
        return
    if "instruction" not in f:
        raise BadInput(source.label, "missing", line=pos, field=f["messages"], unit=source.unit)
    instruction = text(f["instruction"], required=True)
    input_ = text(f["input"], required=False) if "input" in f else ""
    if layout.seed_tasks and row.get("instances") is not None:
        instances = row["instances"]
        meta = metadata(f["instruction"], f.get("input"), "instances")
        if not isinstance(instances, list) or not instances:
            raise BadInput(source.label, "must be a non-empty list of {input, output}", line=pos,
                           field="instances", unit=source.unit)
        for i, inst in enumerate(instances):
            if not isinstance(inst, dict) or inst.get("output") is None:
                raise BadInput(source.label, f"instance {i} has no output", line=pos, field="instances",
                               unit=source.unit)
            inst_input = inst.get("input")
            out.append(instruction,
                       "" if inst_input is None else _text(inst_input, source=source, pos=pos, name=f"instances[{i}].input"),
                       _text(inst["output"], source=source, pos=pos, name=f"instances[{i}].output"),
                       None, {**meta, "instance": i}, provenance_source, pos)
        return
    output = text(f["output"], required=True) if "output" in f else ""
    out.append(instruction, input_, output, None,
               metadata(f["instruction"], f.get("input"), f.get("output")), provenance_source, pos)


_METADATA_FAST_TYPES = (pl.String, pl.Int64, pl.Int32, pl.Boolean, pl.Float64)


def _fast_alpaca_table(path: str, source: Source, layout: Layout, provenance_source: str) -> pa.Table | None:
    """The columnar path for the common case (Alpaca columns in a local JSONL, CSV or Parquet file,
    no nulls where a null could mean a missing key): it reads the file with Polars in one go and
    builds the segment columns without a Python dict per row. It returns None whenever the row
    path must decide, which then reads the file again and names the offending line; both paths
    give identical rows (tests/pipelines/test_importer_fast.py)."""
    fields = layout.fields
    if (source.format not in ("jsonl", "csv", "tsv", "parquet") or layout.seed_tasks or "messages" in fields
            or "://" in path or not Path(path).suffix.lower() in (".jsonl", ".ndjson", ".csv", ".tsv", ".parquet", ".pq")):
        return None
    # the whole file is held column-wise (about 5x its size at peak): past this, stream row by row
    if Path(path).stat().st_size > FAST_PATH_MAX_BYTES:
        return None
    try:
        if source.format == "jsonl":
            frame = pl.read_ndjson(path, infer_schema_length=None)
            if _count_lines(path) != frame.height:  # blank lines: row numbers would not be line numbers
                return None
        elif source.format in ("csv", "tsv"):
            frame = pl.read_csv(path, separator="\t" if source.format == "tsv" else ",", infer_schema=False).fill_null("")
        else:
            frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError, ValueError):
        return None
    used = [fields[t] for t in ("instruction", "input", "output") if t in fields]
    if any(frame.schema[c] != pl.String for c in used):
        return None
    if any(frame[fields[t]].null_count() for t in ("instruction", "output") if t in fields):
        return None
    meta_cols = [c for c in frame.columns if c not in used]
    if any(frame.schema[c] not in _METADATA_FAST_TYPES or frame[c].null_count() for c in meta_cols):
        return None
    if frame.height == 0:
        return None
    text = {t: (pl.col(fields[t]).fill_null("") if t in fields else pl.lit("")) for t in ("instruction", "input", "output")}
    # the canonical form of records.record_id, built column-wise: json.dumps([i, x, o, None],
    # ensure_ascii=False, separators=(",", ":")) is '["' + escaped i + '","' ... '",null]'
    canonical = pl.concat_str([pl.lit('["'), _json_escape(text["instruction"]), pl.lit('","'),
                               _json_escape(text["input"]), pl.lit('","'), _json_escape(text["output"]),
                               pl.lit('",null]')])
    built = frame.select(
        canonical=canonical,
        instruction=text["instruction"], input=text["input"], output=text["output"],
        metadata=pl.struct(meta_cols).struct.json_encode() if meta_cols else pl.lit("{}"),
    )
    ids = [hashlib.blake2b(c.encode(), digest_size=16).hexdigest() for c in built["canonical"].to_list()]
    n = built.height
    table = built.drop("canonical").with_columns(
        id=pl.Series(ids), messages=pl.lit(None, dtype=pl.List(pl.Struct({"role": pl.String, "content": pl.String}))),
        source=pl.lit(provenance_source), source_row=pl.int_range(1, n + 1, dtype=pl.Int64),
        generator=pl.lit("import"), template=pl.lit(None, dtype=pl.String), model=pl.lit(None, dtype=pl.String),
        sampling_params=pl.lit("{}"), parent_ids=pl.lit([], dtype=pl.List(pl.String)),
    ).select(RECORD_SCHEMA.names).to_arrow()
    return table.cast(RECORD_SCHEMA)


def _count_lines(path: str) -> int:
    lines, last = 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (0 if last == b"\n" else 1)


# json.dumps(ensure_ascii=False) escapes exactly these: backslash, quote and the C0 controls
_JSON_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f",
                 **{chr(c): f"\\u{c:04x}" for c in range(0x20) if chr(c) not in "\n\r\t\b\f"}}


def _json_escape(expr: pl.Expr) -> pl.Expr:
    # replace_many replaces all patterns in one left-to-right pass, so nothing is escaped twice
    return expr.str.replace_many(list(_JSON_ESCAPES), list(_JSON_ESCAPES.values()))


def import_source(store: Store, path: str, name: str, config: ImportConfig | None = None, *,
                  show_progress: bool | None = None, source_label: str | None = None) -> Manifest:
    """Import `path` as a new version of dataset `name` and return its manifest. `source_label` names
    the source in provenance instead of the path (the app's uploads live in a temp file that is gone
    after the import, so it records 'upload:<file name>')."""
    config = config or ImportConfig()
    source = open_source(path, config.format, config.split)
    provenance_source = source_label if source_label else source.label if "://" in source.label or source.label.startswith("hf:") \
        else str(Path(source.label.split("[")[0]).resolve()) + source.label[len(source.label.split("[")[0]):]
    sample: list[tuple[int, Any]] = []
    for item in source.rows:
        sample.append(item)
        if len(sample) >= LAYOUT_SAMPLE_ROWS:
            break
    if not sample:
        raise BadInput(source.label, "empty: no records to import")
    layout = Layout.detect(source.label, [r for _, r in sample if isinstance(r, dict)], config.mapping)
    params = {"source": provenance_source, "format": source.format, "mapping": layout.fields,
              "split": config.split, "seed_tasks": layout.seed_tasks}
    writer = VersionWriter(store, name, "import", params)
    fast = _fast_alpaca_table(path, source, layout, provenance_source) if config.fast_path else None
    if fast is not None:
        with progress(f"importing {Path(source.label).name}", total=fast.num_rows, enabled=show_progress) as bar:
            writer.add_table(fast)
            bar.advance(fast.num_rows)
        return writer.commit()
    batch = _Columns()

    def rows() -> Iterator[tuple[int, Any]]:
        yield from sample
        yield from source.rows

    with progress(f"importing {Path(source.label).name}", enabled=show_progress) as bar:
        for pos, row in rows():
            _normalise(row, pos, layout, source, batch, provenance_source)
            if len(batch) >= BATCH_ROWS:
                writer.add_table(batch.table())
                bar.advance(len(batch))
                batch = _Columns()
        if len(batch):
            writer.add_table(batch.table())
            bar.advance(len(batch))
    return writer.commit()
