"""Chain-of-Task (EcomGPT, Li et al. 2023): atomic sub-tasks derived from a domain end task.

The source is a raw domain file (JSONL, one row a line) with a task definition beside it
(`NAME.meta.json`: task, defi, label_set {KEY: [...]}, label_key, label_sep, test_prompt). Each row
becomes several instruction records, one per atomic task it supports, each naming the end task it
serves (metadata `end_task` = the meta's `task`, `atomic_task`; provenance template = the atomic task).

NER end tasks (rows: `sentences`, `spans` [{start, end, type, term}]):
  entity_extraction    one record per label type: "List the Brand entities in: ..." -> the terms of
                       that type (label_sep-joined, in order, once each), or "None" if absent
  span_classification  one record per distinct term: "What type is 'Pentium 4 processor' in ...?" -> its
                       type; a term tagged with two types in one sentence is skipped (`ambiguous_span`)
  ner                  the full end task: every entity "term: type", label_sep-joined, or "None"
Classification end tasks (rows: `sentences`, `labels` {label_key: [...]}):
  topic_classification the end task: the row's labels (label_sep-joined)
  label_verification   one record per candidate label of the label set: "yes" / "no"
  review_generation    (LLM) a short review for a given label; the only sub-task whose answer the
                       rows cannot give. `reviews_per_label` requests per label, each shown an example
                       sentence with that label drawn with the seed. Failed calls are data: in the run
                       journal with their raw replies, counted in `failed`, listed in `failures`.
Answers from rows never touch the LLM. Every row is checked (and every prompt rendered) before the
first request, so a missing meta file or a row lacking a field fails with one line naming the file and
the field, and nothing is committed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay.core.errors import AssayError
from assay.core.llm import ParseError, Request, reply_text
from assay.core.records import Record
from assay.pipelines.generate import (
    GenerationRun,
    Generator,
    load_prompt,
    render,
)

NER_TASKS = ("entity_extraction", "span_classification", "ner")
CLS_TASKS = ("topic_classification", "label_verification", "review_generation")
LLM_TASKS = ("review_generation",)
META_FIELDS = ("task", "label_set", "label_key", "label_sep")


@dataclass
class ChainOfTaskConfig:
    source: str = field(default="", metadata={
        "help": "the domain file: JSONL rows with `sentences` and `spans` (NER) or `labels` (classification)"})
    meta: str | None = field(default=None, metadata={
        "help": "the task definition (task, defi, label_set, label_key, label_sep); default: NAME.meta.json "
                "beside the source"})
    tasks: list[str] | None = field(default=None, metadata={
        "help": "atomic tasks to derive; default: all of the end task's kind. NER: "
                + ", ".join(NER_TASKS) + "; classification: " + ", ".join(CLS_TASKS)})
    limit: int | None = field(default=None, metadata={"help": "use only the first N rows"})
    seed: int = field(default=0, metadata={"help": "seed for drawing the example sentences shown to the LLM"})
    llm_tasks: bool = field(default=True, metadata={
        "help": "run the LLM sub-tasks (review_generation); off: only the answers the rows carry"})
    reviews_per_label: int = field(default=1, metadata={"help": "review_generation requests per label"})
    prompts_dir: str | None = field(default=None, metadata={
        "help": "folder with the prompt templates (cot_*.j2); default: pipelines/prompts"})


# ---- the task definition and the rows ----------------------------------------------------------

def meta_path(source: str) -> Path:
    p = Path(source)
    stem = p.name[:-len(p.suffix)] if p.suffix else p.name
    return p.with_name(stem + ".meta.json")


def load_meta(source: str, meta: str | None) -> dict[str, Any]:
    path = Path(meta) if meta else meta_path(source)
    if not path.is_file():
        raise AssayError(f"chain-of-task: task definition {path} not found (the .meta.json beside {source}, "
                         f"or give `meta`)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AssayError(f"chain-of-task: task definition {path}: not valid JSON "
                         f"({exc.msg}, line {exc.lineno})") from None
    if not isinstance(doc, dict):
        raise AssayError(f"chain-of-task: task definition {path}: expected a JSON object")
    for key in META_FIELDS:
        if key not in doc:
            raise AssayError(f"chain-of-task: task definition {path} lacks field {key!r}")
    labels = doc["label_set"].get(doc["label_key"]) if isinstance(doc["label_set"], dict) else None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise AssayError(f"chain-of-task: task definition {path}: field 'label_set.{doc['label_key']}' "
                         f"(label_key) is not a non-empty list of strings")
    return {**doc, "labels": labels, "path": str(path)}


def end_kind(meta: dict[str, Any]) -> str:
    """'ner' or 'cls', from the task name (EcomGPT names: LANG-DATASET-KIND-...)."""
    parts = str(meta["task"]).upper().split("-")
    if "NER" in parts:
        return "ner"
    if "CLS" in parts:
        return "cls"
    raise AssayError(f"chain-of-task: task definition {meta['path']}: task {meta['task']!r} is neither NER "
                     f"nor CLS (field 'task')")


def load_rows(source: str, kind: str, meta: dict[str, Any], limit: int | None) -> list[tuple[int, dict]]:
    """(line number, row) for the first `limit` rows, each checked for the fields its kind needs."""
    path = Path(source)
    if not path.is_file():
        raise AssayError(f"chain-of-task: source {source}: no such file")
    rows: list[tuple[int, dict]] = []
    labels = set(meta["labels"])
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if limit is not None and len(rows) >= limit:
                break
            where = f"chain-of-task: {source} line {line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AssayError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise AssayError(f"{where}: expected an object")
            if not isinstance(row.get("sentences"), str):
                raise AssayError(f"{where}: row lacks field 'sentences' (a string)")
            if kind == "ner":
                spans = row.get("spans")
                if not isinstance(spans, list):
                    raise AssayError(f"{where}: row lacks field 'spans' (a list)")
                for s in spans:
                    if not isinstance(s, dict) or not {"start", "end", "type", "term"} <= set(s):
                        raise AssayError(f"{where}: field 'spans' has an entry without start, end, type and term")
                    if s["type"] not in labels:
                        raise AssayError(f"{where}: field 'spans' has type {s['type']!r}, not in the label set "
                                         f"({', '.join(meta['labels'])})")
            else:
                got = row.get("labels")
                got = got.get(meta["label_key"]) if isinstance(got, dict) else None
                if not isinstance(got, list) or not got:
                    raise AssayError(f"{where}: row lacks field 'labels.{meta['label_key']}' (a non-empty list)")
                bad = [x for x in got if x not in labels]
                if bad:
                    raise AssayError(f"{where}: field 'labels.{meta['label_key']}' has {bad[0]!r}, not in the "
                                     f"label set ({', '.join(meta['labels'])})")
            rows.append((line_no, row))
    if not rows:
        raise AssayError(f"chain-of-task: {source}: empty, no rows")
    return rows


def unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def parse_review(raw: str) -> str:
    text = reply_text(raw).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    elif text[:1] == '"' and text.count('"') == 1:  # an opening quote whose close was cut off by max_tokens
        text = text[1:].strip()
    if not text:
        raise ParseError("empty review")
    return text


# ---- the generator -----------------------------------------------------------------------------

class ChainOfTask(Generator):
    name = "chain-of-task"
    Config = ChainOfTaskConfig

    def check(self) -> None:
        cfg: ChainOfTaskConfig = self.config
        if not cfg.source:
            raise AssayError("chain-of-task: no source given (a domain JSONL file)")
        if cfg.reviews_per_label < 0:
            raise AssayError("chain-of-task: reviews_per_label must be >= 0")

    def generate(self, run: GenerationRun) -> list[Record]:
        cfg: ChainOfTaskConfig = self.config
        meta = load_meta(cfg.source, cfg.meta)
        kind = end_kind(meta)
        allowed = NER_TASKS if kind == "ner" else CLS_TASKS
        tasks = list(cfg.tasks) if cfg.tasks else list(allowed)
        unknown = [t for t in tasks if t not in allowed]
        if unknown:
            raise AssayError(f"chain-of-task: atomic task(s) {', '.join(unknown)} do not serve {meta['task']} "
                             f"(its atomic tasks: {', '.join(allowed)})")
        if not cfg.llm_tasks:
            tasks = [t for t in tasks if t not in LLM_TASKS]
        prompts = {t: load_prompt(f"cot_{t}", cfg.prompts_dir) for t in tasks}
        rows = load_rows(cfg.source, kind, meta, cfg.limit)
        labels, sep = meta["labels"], meta["label_sep"]
        common = {"labels": sep.join(labels), "sep": sep}
        records: list[Record] = []

        def add(task: str, variables: dict[str, Any], output: str, line_no: int | None, **extra) -> None:
            instruction = render(prompts[task], {**common, **variables}, where=f"{cfg.source} line {line_no}")
            records.append(run.record(instruction=instruction, output=output, metadata={
                "end_task": meta["task"], "atomic_task": task, "defi": meta.get("defi"), "line": line_no, **extra},
                template=task, source=cfg.source, source_row=line_no))

        # 1. the answers the rows carry (no LLM)
        for line_no, row in rows:
            sentence = row["sentences"]
            if kind == "ner":
                spans = sorted(row["spans"], key=lambda s: (s["start"], s["end"]))
                if "entity_extraction" in tasks:
                    for typ in labels:
                        terms = unique([s["term"] for s in spans if s["type"] == typ])
                        add("entity_extraction", {"type": typ, "sentence": sentence},
                            sep.join(terms) if terms else "None", line_no, entity_type=typ, present=bool(terms))
                if "span_classification" in tasks:
                    # one question per term; a term tagged with two types in one sentence has no single answer
                    for term in unique([s["term"] for s in spans]):
                        same = [s for s in spans if s["term"] == term]
                        if len({s["type"] for s in same}) > 1:
                            run.drop("ambiguous_span", term=term, line=line_no)  # the row cannot answer it
                            continue
                        add("span_classification", {"term": term, "sentence": sentence}, same[0]["type"], line_no,
                            term=term, start=same[0]["start"], end=same[0]["end"])
                if "ner" in tasks:
                    pairs = unique([f"{s['term']}: {s['type']}" for s in spans])
                    add("ner", {"sentence": sentence}, sep.join(pairs) if pairs else "None", line_no)
            else:
                got = unique(row["labels"][meta["label_key"]])
                if "topic_classification" in tasks:
                    add("topic_classification", {"sentence": sentence}, sep.join(got), line_no, labels=got)
                if "label_verification" in tasks:
                    for lab in labels:
                        add("label_verification", {"label": lab, "sentence": sentence},
                            "yes" if lab in got else "no", line_no, label=lab)

        # 2. the LLM sub-task: prompts rendered before the first request
        requests, asks = [], []
        if "review_generation" in tasks and cfg.reviews_per_label:
            rng = random.Random(cfg.seed)
            by_label = {lab: [(n, r["sentences"]) for n, r in rows if lab in r["labels"][meta["label_key"]]]
                        for lab in labels}
            for lab in labels:
                for k in range(cfg.reviews_per_label):
                    example = rng.choice(by_label[lab]) if by_label[lab] else (None, "")
                    key = f"review/{lab}/{k}"
                    content = render(prompts["review_generation"], {**common, "label": lab, "example": example[1]},
                                     where=key)
                    requests.append(Request(key, [{"role": "user", "content": content}], parse=parse_review))
                    asks.append({"key": key, "label": lab, "instruction": content, "example_line": example[0]})
        # the record: the label is the instruction ("write a review about X"), the review the answer
        for ask, res in zip(asks, run.ask(requests)):
            if not res.ok:
                run.drop("review_failed", key=ask["key"], label=ask["label"])
                continue
            records.append(run.record(
                instruction=f"Write a short customer review about the topic \"{ask['label']}\".",
                output=res.value, metadata={
                    "end_task": meta["task"], "atomic_task": "review_generation", "defi": meta.get("defi"),
                    "label": ask["label"], "llm_key": ask["key"], "prompt": ask["instruction"],
                    "example_line": ask["example_line"]},
                template="review_generation"))
        counts = {t: sum(1 for r in records if r.metadata["atomic_task"] == t) for t in tasks}
        run.params.update(source=cfg.source, meta=meta["path"], end_task=meta["task"], atomic_tasks=counts)
        run.details.update(source=cfg.source, meta=meta["path"], end_task=meta["task"], kind=kind, rows=len(rows),
                           atomic_tasks=counts)
        return records
