"""Flan-style templating: an existing dataset becomes new instruction records, no LLM.

Each task of the YAML library (`pipelines/template_library/flan.yaml`, extended with `--library PATH`) holds
several phrasings; every source row is rendered with each (or `phrasings` of them, drawn with the
seed), zero-shot and/or few-shot: k exemplars drawn (seeded) from the same dataset, rendered with the
same phrasing and put before the query, as Flan does. Inverted tasks are just templates that swap the
roles (write the question for this answer). Every record keeps its template id in provenance.

Everything is rendered before anything is committed, so a template that names a missing field stops
the run with one line naming the template and the field, and leaves no version behind.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from assay.core.errors import AssayError, BadInput
from assay.core.llm import LLMConfig
from assay.core.records import Record, export_row, record_id
from assay.core.sources import ALIASES, open_source
from assay.core.store import Store
from assay.pipelines.generate import GenerationReport, Generator, commit_records, compile_template, provenance, render

LIBRARY = Path(__file__).resolve().parent / "template_library" / "flan.yaml"
MODES = ("zero-shot", "few-shot", "both")


@dataclass
class TemplatesConfig:
    source: str = field(default="", metadata={
        "help": "the dataset to template: a version (NAME, NAME@N, id) or a file (JSONL, JSON, CSV, Parquet)"})
    tasks: list[str] = field(default_factory=lambda: ["qa"], metadata={
        "help": "task ids from the library, e.g. qa, qa-inverted, classify"})
    library: list[str] = field(default_factory=list, metadata={
        "help": "extra YAML template libraries; a task with a built-in id replaces it"})
    mode: str = field(default="zero-shot", metadata={"help": f"one of {', '.join(MODES)}"})
    shots: int = field(default=2, metadata={"help": "few-shot: exemplars per record, drawn from the same dataset"})
    phrasings: int = field(default=0, metadata={
        "help": "phrasings per source row and task, drawn with the seed; 0 = every phrasing"})
    seed: int = field(default=0, metadata={"help": "seed for drawing phrasings and exemplars"})
    map: dict[str, str] = field(default_factory=dict, metadata={
        "help": "template variable -> source field (dotted for nested: label=labels.default)"})
    options: list[str] | None = field(default=None, metadata={
        "help": "label set for classification tasks; default: label_set of NAME.meta.json beside the source"})
    meta: str | None = field(default=None, metadata={
        "help": "JSON file exposed to templates as `meta`; default: NAME.meta.json beside a source file"})
    limit: int | None = field(default=None, metadata={"help": "template only the first N source rows"})


@dataclass
class Task:
    id: str
    templates: list[dict[str, Any]]  # {"id", "instruction", "input", "output": compiled templates}
    inverted: bool = False
    separator: str = "\n\n"


def load_library(extra: list[str] | tuple[str, ...] = ()) -> dict[str, Task]:
    """The built-in library, then each extra file (a task id there replaces the built-in one)."""
    tasks: dict[str, Task] = {}
    seen_templates: dict[str, str] = {}
    for path in (LIBRARY, *map(Path, extra)):
        if not path.is_file():
            raise AssayError(f"template library {path}: no such file")
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise AssayError(f"template library {path}: not valid YAML: {exc}".splitlines()[0]) from None
        if not isinstance(doc.get("tasks"), list):
            raise AssayError(f"template library {path}: expected a top-level 'tasks' list")
        for t in doc["tasks"]:
            if not isinstance(t, dict) or not t.get("id") or not isinstance(t.get("templates"), list) \
                    or not t["templates"]:
                raise AssayError(f"template library {path}: every task needs an 'id' and a non-empty "
                                 f"'templates' list (got {str(t)[:80]})")
            for old in tasks.get(t["id"], Task("", [])).templates:  # replaced task: free its template ids
                seen_templates.pop(old["id"], None)
            compiled = []
            for tpl in t["templates"]:
                tid = tpl.get("id") if isinstance(tpl, dict) else None
                if not tid or "instruction" not in tpl or "output" not in tpl:
                    raise AssayError(f"template library {path}: task {t['id']!r}: every template needs "
                                     f"'id', 'instruction' and 'output' (got {str(tpl)[:80]})")
                if tid in seen_templates:
                    raise AssayError(f"template library {path}: template id {tid!r} is used twice")
                seen_templates[tid] = t["id"]
                compiled.append({"id": tid, **{part: compile_template(str(tpl.get(part, "")), tid)
                                               for part in ("instruction", "input", "output")}})
            tasks[t["id"]] = Task(t["id"], compiled, bool(t.get("inverted", False)),
                                  str(t.get("exemplar_separator", "\n\n")))
    return tasks


# ---- reading the source ------------------------------------------------------------------------

@dataclass
class _Row:
    pos: int  # 1-based
    vars: dict[str, Any]
    parent_id: str | None


def _dig(row: dict[str, Any], path: str, where: str) -> Any:
    value: Any = row
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise BadInput(where, f"--map: no field {path!r} (fields: {', '.join(row) or 'none'})")
        value = value[part]
    return value


def _read_source(store: Store, config: TemplatesConfig) -> tuple[str, list[_Row], list[str], dict | None]:
    """(label, rows, parent version ids, meta) for a version ref or a file."""
    src = config.source
    if not src:
        raise AssayError("templates: no source given (a version, a file or hf:OWNER/NAME)")
    rows: list[_Row] = []
    meta_path = config.meta
    if os.path.exists(src) or "://" in src or src.startswith("hf:"):  # a file, a URL or a Hub dataset id
        label, parents = src, []
        source = open_source(src, None, None)
        for pos, raw in source.rows:
            if not isinstance(raw, dict):
                raise BadInput(src, "expected an object per row", line=pos, unit=source.unit)
            row = dict(raw)
            for target in ("instruction", "input", "output"):  # the same aliases `assay import` knows
                if target not in row:
                    alias = next((a for a in ALIASES[target] if a in raw), None)
                    if alias is not None:
                        row[target] = raw[alias]
            parent = (record_id(str(row["instruction"]), str(row.get("input") or ""), str(row.get("output") or ""),
                                None) if "instruction" in row else None)
            rows.append(_Row(pos, row, parent))
            if config.limit and len(rows) >= config.limit:
                break
        if meta_path is None:
            stem = src
            for suffix in (".gz", ".jsonl", ".json", ".csv", ".tsv", ".parquet"):
                stem = stem.removesuffix(suffix)
            meta_path = stem + ".meta.json" if os.path.exists(stem + ".meta.json") else None
    else:
        manifest = store.resolve(src)
        label, parents = manifest.ref, [manifest.id]
        frame = store.read(manifest)
        if config.limit:
            frame = frame.head(config.limit)
        for pos, r in enumerate(frame.iter_rows(named=True), 1):
            rows.append(_Row(pos, export_row(r), r["id"]))
    if not rows:
        raise BadInput(label, "empty: no rows to template")
    meta = None
    if meta_path:
        try:
            meta = json.loads(Path(meta_path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AssayError(f"{meta_path}: cannot read the meta file: {exc}") from None
    for row in rows:
        for var, path in config.map.items():
            row.vars[var] = _dig(row.vars, path, f"{label}:{row.pos}")
    return label, rows, parents, meta


def _options(config: TemplatesConfig, meta: dict | None) -> list[str] | None:
    if config.options is not None:
        return list(config.options)
    if isinstance(meta, dict) and isinstance(meta.get("label_set"), dict):
        labels = meta["label_set"]
        key = meta.get("label_key") or next(iter(labels), None)
        if key in labels:
            return list(labels[key])
    return None


# ---- the generator -----------------------------------------------------------------------------

class FlanTemplates(Generator):
    name = "templates"
    Config = TemplatesConfig
    uses_llm = False

    def run(self, store: Store, name: str, *, llm: LLMConfig | None = None, run_id: str | None = None,
            parents: list[str] | None = None) -> GenerationReport:
        cfg: TemplatesConfig = self.config
        if cfg.mode not in MODES:
            raise AssayError(f"templates: mode must be one of {', '.join(MODES)} (got {cfg.mode!r})")
        if cfg.shots < 1 and cfg.mode != "zero-shot":
            raise AssayError("templates: shots must be >= 1 for few-shot")
        library = load_library(cfg.library)
        unknown = [t for t in cfg.tasks if t not in library]
        if unknown or not cfg.tasks:
            raise AssayError(f"templates: unknown task(s) {', '.join(unknown) or '(none given)'} "
                             f"(tasks: {', '.join(library)})")
        label, rows, source_parents, meta = _read_source(store, cfg)
        options = _options(cfg, meta)
        extra = {k: v for k, v in (("options", options), ("meta", meta)) if v is not None}
        rng = random.Random(cfg.seed)
        modes = ["zero-shot", "few-shot"] if cfg.mode == "both" else [cfg.mode]
        if "few-shot" in modes and len(rows) <= cfg.shots:
            raise AssayError(f"templates: few-shot with {cfg.shots} shots needs more than {cfg.shots} rows "
                             f"({label} has {len(rows)})")
        source = None if source_parents else str(Path(label).resolve())
        records: list[Record] = []
        cache: dict[tuple[str, int], tuple[str, str, str]] = {}  # (template id, row index) -> rendered

        def rendered(tpl: dict, i: int) -> tuple[str, str, str]:
            key = (tpl["id"], i)
            if key not in cache:
                v = {**rows[i].vars, **extra}
                where = f"{label} row {rows[i].pos}"
                cache[key] = tuple(render(tpl[p], v, where=where).strip()  # type: ignore[assignment]
                                   for p in ("instruction", "input", "output"))
            return cache[key]

        for task_id in cfg.tasks:
            task = library[task_id]
            for i, row in enumerate(rows):
                chosen = task.templates
                if cfg.phrasings and cfg.phrasings < len(chosen):
                    chosen = rng.sample(chosen, cfg.phrasings)
                for tpl in chosen:
                    instruction, input_, output = rendered(tpl, i)
                    for mode in modes:
                        meta_out: dict[str, Any] = {"task": task_id, "mode": mode, "inverted": task.inverted}
                        parent_ids = [row.parent_id] if row.parent_id else []
                        text = instruction
                        if mode == "few-shot":
                            # exemplars: other rows of the same dataset, never the query itself
                            picks = rng.sample([j for j in range(len(rows)) if j != i], cfg.shots)
                            shots = []
                            for j in picks:
                                ei, ein, eo = rendered(tpl, j)
                                shots.append("\n".join(x for x in (ei, ein, eo) if x))
                            text = task.separator.join([*shots, instruction])
                            meta_out["shots"] = cfg.shots
                            meta_out["exemplar_rows"] = [rows[j].pos for j in picks]
                            parent_ids += [rows[j].parent_id for j in picks if rows[j].parent_id]
                        records.append(Record(
                            instruction=text, input=input_, output=output, metadata=meta_out,
                            provenance=provenance(generator=self.name, template=tpl["id"], run_id=None,
                                                  source=source or label, source_row=row.pos,
                                                  parent_ids=parent_ids)))
        params = {"generator": self.name, "config": _jsonable(cfg), "source": label, "library": [str(LIBRARY),
                  *cfg.library], "options": options}
        manifest = commit_records(store, name, records, generator=self.name, params=params,
                                  parents=[*source_parents, *(parents or [])])
        return GenerationReport(self.name, manifest.id, manifest.ref, manifest.records, run_id=run_id,
                                details={"source": label, "source_rows": len(rows), "tasks": list(cfg.tasks),
                                         "modes": modes})


def _jsonable(cfg: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(cfg), default=str))
