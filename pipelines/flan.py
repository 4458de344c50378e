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
from assay.core.records import Record
from assay.core.sources import Seeds, read_seeds
from assay.core.store import Store
from assay.pipelines.generate import GenerationRun, Generator, compile_template, render

LIBRARY = Path(__file__).resolve().parent / "template_library" / "flan.yaml"
MODES = ("zero-shot", "few-shot", "both")


@dataclass
class FlanConfig:
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


def _read_source(store: Store, config: FlanConfig) -> tuple[Seeds, list[_Row], dict | None]:
    """(seeds, rows with their template variables, meta) for a version, a file or a Hub dataset."""
    if not config.source:
        raise AssayError("templates: no source given (a version, a file or hf:OWNER/NAME)")
    seeds = read_seeds(store, config.source, config.limit)
    if not seeds.rows:
        raise BadInput(seeds.label, "empty: no rows to template")
    meta_path = config.meta
    if meta_path is None and seeds.path:  # NAME.meta.json beside a source file
        stem = seeds.path
        for suffix in (".gz", ".jsonl", ".json", ".csv", ".tsv", ".parquet"):
            stem = stem.removesuffix(suffix)
        meta_path = stem + ".meta.json" if os.path.exists(stem + ".meta.json") else None
    meta = None
    if meta_path:
        try:
            meta = json.loads(Path(meta_path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AssayError(f"{meta_path}: cannot read the meta file: {exc}") from None
    rows = [_Row(seed.pos, seed.fields, seed.record_id) for seed in seeds.rows]
    for row in rows:
        for var, path in config.map.items():
            row.vars[var] = _dig(row.vars, path, f"{seeds.label}:{row.pos}")
    return seeds, rows, meta


def _options(config: FlanConfig, meta: dict | None) -> list[str] | None:
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
    Config = FlanConfig
    uses_llm = False

    def check(self) -> None:
        cfg: FlanConfig = self.config
        if cfg.mode not in MODES:
            raise AssayError(f"templates: mode must be one of {', '.join(MODES)} (got {cfg.mode!r})")
        if cfg.shots < 1 and cfg.mode != "zero-shot":
            raise AssayError("templates: shots must be >= 1 for few-shot")

    def generate(self, run: GenerationRun) -> list[Record]:
        cfg: FlanConfig = self.config
        library = load_library(cfg.library)
        unknown = [t for t in cfg.tasks if t not in library]
        if unknown or not cfg.tasks:
            raise AssayError(f"templates: unknown task(s) {', '.join(unknown) or '(none given)'} "
                             f"(tasks: {', '.join(library)})")
        seeds, rows, meta = _read_source(run.store, cfg)
        label = seeds.label
        run.seed_parents = seeds.parents
        options = _options(cfg, meta)
        extra = {k: v for k, v in (("options", options), ("meta", meta)) if v is not None}
        rng = random.Random(cfg.seed)
        modes = ["zero-shot", "few-shot"] if cfg.mode == "both" else [cfg.mode]
        if "few-shot" in modes and len(rows) <= cfg.shots:
            raise AssayError(f"templates: few-shot with {cfg.shots} shots needs more than {cfg.shots} rows "
                             f"({label} has {len(rows)})")
        # a local file is named by its absolute path, as `assay import` names it; a version, URL or
        # Hub dataset by how it was given
        source = str(Path(seeds.path).resolve()) if seeds.path else label
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
                        records.append(run.record(
                            instruction=text, input=input_, output=output, metadata=meta_out,
                            template=tpl["id"], source=source, source_row=row.pos,
                            parent_ids=parent_ids))
        run.params.update(source=label, library=[str(LIBRARY), *cfg.library], options=options)
        run.details.update(source=label, source_rows=len(rows), tasks=list(cfg.tasks), modes=modes)
        return records


