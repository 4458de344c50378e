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

import itertools
import json
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from assay.core.errors import AssayError, BadInput
from assay.core.progress import progress
from assay.core.ray_cluster import resolve_engine
from assay.core.records import RECORD_SCHEMA, dump_json, record_id
from assay.core.sources import ALIASES, FORMATS, Source, open_source
from assay.core.store import Manifest, Store, VersionWriter

from .columnar import COLUMNAR_FORMATS, Batch, alpaca_table, batches
from .import_ray import import_parts_on_ray, ray_refusal

TARGETS = ("instruction", "input", "output", "messages")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "bot": "assistant", "chatgpt": "assistant", "model": "assistant", "system": "system"}
LAYOUT_SAMPLE_ROWS = 1000
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
        "help": "read plain Alpaca rows of JSONL, CSV and Parquet files column-wise (same result, several "
                "times faster); off: row by row"})
    chunk_mb: float = field(default=32, metadata={
        "help": "MB of the file read per batch: memory stays near 8x this whatever the file's size"})
    max_memory_mb: float = field(default=0, metadata={
        "help": "fail with a clear error (committing nothing) when the import would use more memory "
                "than this; 0: no cap (the local engine's cap)"})
    engine: str | None = field(default=None, metadata={
        "help": "local, or ray: the file cut into byte ranges (JSON Lines) or row groups (Parquet), each "
                "parsed and written as segments by a Ray task; default $ASSAY_ENGINE (sources ray cannot "
                "split then run locally), else local"})
    ray_address: str | None = field(default=None, metadata={
        "help": "the Ray cluster (host:port of its head); default $RAY_ADDRESS, else a local cluster"})


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
            text_input = "" if inst_input is None else _text(inst_input, source=source, pos=pos,
                                                             name=f"instances[{i}].input")
            out.append(instruction, text_input,
                       _text(inst["output"], source=source, pos=pos, name=f"instances[{i}].output"),
                       None, {**meta, "instance": i}, provenance_source, pos)
        return
    output = text(f["output"], required=True) if "output" in f else ""
    out.append(instruction, input_, output, None,
               metadata(f["instruction"], f.get("input"), f.get("output")), provenance_source, pos)


def import_source(store: Store, path: str, name: str, config: ImportConfig | None = None, *,
                  show_progress: bool | None = None, source_label: str | None = None) -> Manifest:
    """Import `path` as a new version of dataset `name` and return its manifest. `source_label` names
    the source in provenance instead of the path (the app's uploads live in a temp file that is gone
    after the import, so it records 'upload:<file name>')."""
    config = config or ImportConfig()
    chunk_bytes = int(config.chunk_mb * (1 << 20))
    if config.max_memory_mb and chunk_bytes * MEMORY_PER_CHUNK_BYTE > config.max_memory_mb * (1 << 20):
        raise AssayError(f"import of {path}: chunks of {config.chunk_mb:g} MB need about "
                         f"{chunk_bytes * MEMORY_PER_CHUNK_BYTE / (1 << 20):,.0f} MB, over max_memory_mb="
                         f"{config.max_memory_mb:g}; lower chunk_mb")
    source = open_source(path, config.format, config.split)
    # Local paths are recorded absolute (keeping any "[split]" suffix); URLs and hf: names as given.
    base, suffix = source.label.split("[")[0], source.label[len(source.label.split("[")[0]):]
    is_remote = "://" in source.label or source.label.startswith("hf:")
    provenance_source = source_label or (source.label if is_remote else str(Path(base).resolve()) + suffix)
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
    columnar = config.fast_path and source.format in COLUMNAR_FORMATS and not layout.seed_tasks
    if columnar:
        source.rows.close()  # the sample's reader: the batches read the file again from its start
        parts = batches(path, source.format, chunk_bytes=chunk_bytes)
    else:
        def rest() -> Iterator[tuple[int, Any]]:
            yield from sample
            yield from source.rows
        parts = _row_batches(rest())
    if resolve_engine(config.engine) == "ray":
        refusal = ray_refusal(path, source.format, layout.seed_tasks)
        if refusal is None:
            source.rows.close()
            parts = import_parts_on_ray(store, path, source.format, layout=layout, source=source,
                                        provenance_source=provenance_source, chunk_bytes=chunk_bytes,
                                        address=config.ray_address, show_progress=show_progress,
                                        to_table=batch_table)
            writer = VersionWriter(store, name, "import", params)
            writer.add_parts(parts)
            return writer.commit()
        if config.engine:
            raise AssayError(f"import of {path} on the ray engine: {refusal}; use --engine local")
        # ASSAY_ENGINE=ray says where work may go; a source Ray cannot split is imported here

    def record_rows(part: Batch) -> pa.Table:
        return batch_table(part, layout, source, provenance_source)

    writer = _BackgroundWriter(VersionWriter(store, name, "import", params))
    # Batches are parsed PARSE_WORKERS at a time (Polars' reader and column work release the GIL) and
    # written in file order, so the first bad line in the file is the one reported
    parsing = ThreadPoolExecutor(max_workers=PARSE_WORKERS, thread_name_prefix="assay-import-parse")
    in_flight: deque[Future] = deque()
    try:
        with progress(f"importing {Path(source.label).name}", enabled=show_progress) as bar:
            def write_oldest() -> None:
                table = in_flight.popleft().result()
                writer.add(table)
                bar.advance(table.num_rows)
                _check_memory(config, path)

            for part in parts:
                in_flight.append(parsing.submit(record_rows, part))
                if len(in_flight) >= PARSE_WORKERS:
                    write_oldest()
            while in_flight:
                write_oldest()
        return writer.commit()
    finally:
        parsing.shutdown(wait=True, cancel_futures=True)
        writer.close()


# Batches parsed at once: two cores' worth (the machines Assay is sized for have few)
PARSE_WORKERS = max(1, min(2, os.cpu_count() or 1))
# Peak memory per byte of a JSON chunk: the bytes, the Polars frame and the Arrow table built from
# it, times the batches in flight, and the segment being written meanwhile (measured at 32 MB
# chunks: 700 MB peak for a 10M-record file; bench/store_bench.py)
MEMORY_PER_CHUNK_BYTE = 4 * (PARSE_WORKERS + 1)


def batch_table(part: Batch, layout: "Layout", source: Source, provenance_source: str) -> pa.Table:
    """One batch of the source as record rows: column-wise when its frame reads as plain rows, else
    row by row (chat rows, nulls, a bad row, named by file and line)."""
    frame = part.frame()
    table = alpaca_table(frame, layout.fields, part.first, provenance_source) if frame is not None else None
    if table is None:
        batch = _Columns()
        for pos, row in part.rows():
            _normalise(row, pos, layout, source, batch, provenance_source)
        table = batch.table()
    return table


def _check_memory(config: ImportConfig, path: str) -> None:
    if not config.max_memory_mb:
        return
    rss = _rss_mb()
    if rss > config.max_memory_mb:
        raise AssayError(f"import of {path}: {rss:,.0f} MB in use, over max_memory_mb={config.max_memory_mb:g}; "
                         "lower chunk_mb (nothing was committed)")


def _rss_mb() -> float:
    """This process's resident memory now, in MiB (Linux /proc; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except (OSError, ValueError, IndexError):
        return 0.0


def _row_batches(rows: Iterator[tuple[int, Any]]) -> Iterator[Batch]:
    """The row path's batches: BATCH_ROWS rows each, no frame."""
    while True:
        chunk = list(itertools.islice(rows, BATCH_ROWS))
        if not chunk:
            return
        yield Batch(lambda: None, chunk[0][0], lambda c=chunk: iter(c))


class _BackgroundWriter:
    """Writes segments on one thread while the next batch is parsed: Parquet encoding and Polars'
    JSON reader both release the GIL, so on two cores they overlap. At most one table waits, which
    bounds the memory; the first error of the thread is raised in the caller."""

    def __init__(self, writer: VersionWriter):
        self.writer = writer
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="assay-import-writer")
        self.pending: Future | None = None

    def add(self, table: pa.Table) -> None:
        if self.pending is not None:
            self.pending.result()
        self.pending = self.pool.submit(self.writer.add_table, table)

    def commit(self) -> Manifest:
        if self.pending is not None:
            self.pending.result()
            self.pending = None
        return self.writer.commit()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
