"""Chain-of-Task's task definitions, read from EcomGPT's own layout (`pipelines/chain_of_task.py` uses them).

A source is one of:
- a data file (JSON Lines rows) with its definition beside it: `NAME.meta.json` (the flat layout), or
  `meta-info.json` in the same folder (EcomGPT's `tasks/<TASK>/test.json`);
- a task folder, EcomGPT's `tasks/<TASK>/` (`meta-info.json` + `train.json` or `test.json`; train first,
  since the records are training data and a test split should stay unseen);
- a folder of tasks, EcomGPT's `ecom_instruct_v1/<DATASET>/tasks/`: every task folder in it, and every
  `NAME.json` with a `NAME.meta.json` beside it;
- a dataset version (with `meta` naming the definition): its records' fields as `assay export` writes them.

The family of a definition (which atomic sub-tasks it supports) comes from the task name (EcomGPT's
LANG-DATASET-KIND-NAME), then from `defi`, unless `family` is given. Its language (the templates') comes
from the label set in use (`label_key` "cn"/"zh") or else the task name's LANG part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay.core.errors import AssayError
from assay.core.sources import is_external, read_seeds

META_INFO = "meta-info.json"
DATA_FILES = ("train.json", "test.json")  # in the order a task folder is read
# family -> what it is, for errors and docs
FAMILIES = {"cls": "classification (CLS, with label_set)",
            "ner": "NER and span detection (NER, Condition_Extract: typed spans)",
            "extract": "extraction (Extract: spans without a label set)",
            "generate": "generation (Generate: the target is the span's term)"}
NAME_TOKENS = {"CLS": "cls", "NER": "ner", "CONDITION_EXTRACT": "ner", "EXTRACT": "extract", "GENERATE": "generate"}
# `defi` words, tried in this order (span detection before extraction: "entity span detection")
DEFI_WORDS = (("entity", "ner"), ("span detection", "ner"), ("generat", "generate"), ("classif", "cls"),
              ("categor", "cls"), ("select", "extract"), ("extract", "extract"), ("answer", "extract"))
LABELLED = ("cls", "ner")  # families whose definition must carry a label set
ZH_KEYS = ("cn", "zh")


@dataclass
class TaskSource:
    data: str  # the data file (or version ref)
    meta: str  # the task definition file


@dataclass
class TaskDef:
    """One end task, its definition checked and its rows read and checked."""

    data: str
    meta_path: str
    meta: dict[str, Any]
    task: str
    family: str
    language: str  # "en" or "zh"
    labels: list[str]  # the label set in use ([] for extract/generate)
    sep: str
    type_of: dict[str, str]  # a span type as the rows write it -> its name in the label set in use
    rows: list[tuple[int, dict, str | None]] = field(default_factory=list)  # (line, row, record id)
    parents: list[str] = field(default_factory=list)  # the version the rows came from


def find_tasks(source: str, meta: str | None) -> list[TaskSource]:
    """The task definitions a source names, in a stable order."""
    p = Path(source)
    if p.is_file():
        return [TaskSource(source, meta or beside(p))]
    if p.is_dir():
        if (p / META_INFO).is_file():
            return [TaskSource(str(task_data(p)), meta or str(p / META_INFO))]
        if meta:
            raise AssayError(f"chain-of-task: source {source} is a folder of tasks; `meta` names one definition "
                             f"and cannot serve them all (give a task folder or file with it)")
        found = scan(p, depth=3)
        if not found:
            raise AssayError(f"chain-of-task: source {source}: no task in it (a task is a folder with {META_INFO} "
                             f"and {' or '.join(DATA_FILES)}, or NAME.json with NAME.meta.json)")
        return found
    if is_external(source) or not meta:
        raise AssayError(f"chain-of-task: source {source}: no such file or folder (a dataset version as the "
                         f"source needs `meta`, its task definition)")
    return [TaskSource(source, meta)]  # a version ref


def scan(folder: Path, depth: int) -> list[TaskSource]:
    """The tasks in a folder: its task folders, its NAME.json files with a NAME.meta.json, and those of its
    other subfolders (EcomGPT nests tasks as ecom_instruct_v1/<DATASET>/tasks/<TASK>), `depth` levels down."""
    found = []
    for child in sorted(folder.iterdir()):
        if child.is_dir() and (child / META_INFO).is_file():
            found.append(TaskSource(str(task_data(child)), str(child / META_INFO)))
        elif child.is_dir() and depth > 1:
            found += scan(child, depth - 1)
        elif child.is_file() and child.suffix == ".json" and not child.name.endswith(".meta.json") \
                and child.with_name(child.stem + ".meta.json").is_file():
            found.append(TaskSource(str(child), str(child.with_name(child.stem + ".meta.json"))))
    return found


def beside(data: Path) -> str:
    """The definition beside a data file: NAME.meta.json (flat layout), else the folder's meta-info.json."""
    stem = data.name[:-len(data.suffix)] if data.suffix else data.name
    own = data.with_name(stem + ".meta.json")
    if own.is_file() or not (data.parent / META_INFO).is_file():
        return str(own)  # a missing one is reported when it is read
    return str(data.parent / META_INFO)


def task_data(folder: Path) -> Path:
    for name in DATA_FILES:
        if (folder / name).is_file():
            return folder / name
    raise AssayError(f"chain-of-task: task folder {folder} has {META_INFO} but no data "
                     f"({' or '.join(DATA_FILES)})")


def read_meta(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        extra = f" (nor {p.parent / META_INFO})" if p.name != META_INFO else ""
        raise AssayError(f"chain-of-task: task definition {path} not found{extra}; give `meta`")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AssayError(f"chain-of-task: task definition {path}: not valid JSON "
                         f"({exc.msg}, line {exc.lineno})") from None
    if not isinstance(doc, dict):
        raise AssayError(f"chain-of-task: task definition {path}: expected a JSON object")
    for key in ("task", "label_sep"):
        if key not in doc:
            raise AssayError(f"chain-of-task: task definition {path} lacks field {key!r}")
    return doc


def family_of(meta: dict[str, Any], path: str, override: str | None) -> str:
    known = "; ".join(f"{k}: {v}" for k, v in FAMILIES.items())
    if override:
        if override not in FAMILIES:
            raise AssayError(f"chain-of-task: unknown family {override!r} (families: {known})")
        return override
    parts = str(meta["task"]).upper().split("-")
    for part in parts[2:3] + parts:  # EcomGPT's KIND part first, then any part
        if part in NAME_TOKENS:
            return NAME_TOKENS[part]
    defi = str(meta.get("defi") or "").lower()
    for word, fam in DEFI_WORDS:
        if word in defi:
            return fam
    raise AssayError(f"chain-of-task: task definition {path}: task {meta['task']!r} (defi {meta.get('defi')!r}) "
                     f"is of no known family (families: {known}); give `family`")


def language_of(meta: dict[str, Any], override: str | None) -> str:
    if override:
        if override not in ("en", "zh"):
            raise AssayError(f"chain-of-task: unknown language {override!r} (languages: en, zh)")
        return override
    key = str(meta.get("label_key") or "").lower()
    if key in ZH_KEYS:
        return "zh"
    if key == "en":
        return "en"
    return "zh" if str(meta["task"]).upper().split("-")[0] in ("ZH", "CN") else "en"


def label_set(meta: dict[str, Any], path: str) -> tuple[list[str], dict[str, str]]:
    """The label set in use and the translation of the other sets' names into it (by position: EcomGPT's
    `label_set` {"en": [...], "cn": [...]} lists the same labels in each language)."""
    for key in ("label_set", "label_key"):
        if key not in meta:
            raise AssayError(f"chain-of-task: task definition {path} lacks field {key!r}")
    sets = meta["label_set"] if isinstance(meta["label_set"], dict) else {}
    labels = sets.get(meta["label_key"])
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise AssayError(f"chain-of-task: task definition {path}: field 'label_set.{meta['label_key']}' "
                         f"(label_key) is not a non-empty list of strings")
    type_of = {x: x for x in labels}
    for other in sets.values():
        if isinstance(other, list) and len(other) == len(labels):
            type_of.update({x: y for x, y in zip(other, labels) if isinstance(x, str) and x not in type_of})
    return labels, type_of


def load_task(store, ts: TaskSource, family: str | None, language: str | None, limit: int | None) -> TaskDef:
    meta = read_meta(ts.meta)
    fam = family_of(meta, ts.meta, family)
    labels, type_of = label_set(meta, ts.meta) if fam in LABELLED else ([], {})
    td = TaskDef(ts.data, ts.meta, meta, str(meta["task"]), fam, language_of(meta, language), labels,
                 str(meta["label_sep"]), type_of)
    seeds = read_seeds(store, ts.data, limit)
    td.parents = seeds.parents
    for seed in seeds.rows:
        row = seed.fields
        if seeds.parents and "sentences" not in row:  # a version imported with --map instruction=sentences
            row = {**row, "sentences": row.get("instruction")}
        # a version's records are the parents of what is made from them; a file's rows have no record yet
        rid = seed.record_id if seeds.parents else None
        td.rows.append((seed.pos, check_row(td, seeds.label, seeds.unit, seed.pos, row), rid))
    if not td.rows:
        raise AssayError(f"chain-of-task: {ts.data}: empty, no rows")
    return td


def check_row(td: TaskDef, label: str, unit: str, pos: int, row: dict) -> dict:
    """The row with the fields its family needs checked (span types translated into the label set in use)."""
    where = f"chain-of-task: {label} {unit} {pos}"
    if not isinstance(row.get("sentences"), str):
        raise AssayError(f"{where}: row lacks field 'sentences' (a string)")
    if td.family == "cls":
        got = row.get("labels")
        got = got.get(td.meta["label_key"]) if isinstance(got, dict) else None
        if not isinstance(got, list) or not got:
            raise AssayError(f"{where}: row lacks field 'labels.{td.meta['label_key']}' (a non-empty list)")
        bad = [x for x in got if td.type_of.get(x) is None]
        if bad:
            raise AssayError(f"{where}: field 'labels.{td.meta['label_key']}' has {bad[0]!r}, not in the "
                             f"label set ({', '.join(td.labels)})")
        return {**row, "_labels": list(dict.fromkeys(td.type_of[x] for x in got))}
    spans = row.get("spans")
    if not isinstance(spans, list) or (td.family == "generate" and not spans):
        raise AssayError(f"{where}: row lacks field 'spans' (a {'non-empty ' if td.family == 'generate' else ''}"
                         f"list)")
    need = {"start", "end", "type", "term"} if td.family == "ner" else {"term"}
    for s in spans:
        if not isinstance(s, dict) or not need <= set(s) or not isinstance(s["term"], str):
            raise AssayError(f"{where}: field 'spans' has an entry without {', '.join(sorted(need))}")
        if td.family == "ner" and td.type_of.get(s["type"]) is None:
            raise AssayError(f"{where}: field 'spans' has type {s['type']!r}, not in the label set "
                             f"({', '.join(td.labels)})")
    if td.family == "ner":
        spans = sorted(({**s, "type": td.type_of[s["type"]]} for s in spans), key=lambda s: (s["start"], s["end"]))
    return {**row, "spans": spans}
