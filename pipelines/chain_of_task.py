"""Chain-of-Task (EcomGPT, Li et al. 2023): atomic sub-tasks derived from domain end tasks.

EcomGPT's point is that every end task, whatever its family, decomposes into atomic sub-tasks (entity
extraction, span detection, classification, matching, selection, generation). The source is one task
definition with its rows, or many (a folder of EcomGPT task folders); `chain_of_task_layout` finds and
checks them, `chain_of_task_families` makes each family's records:

  cls       topic_classification (the end task), label_verification (yes/no per label),
            review_generation (LLM: a short review for a label)
  ner       entity_extraction (the terms of one type), span_classification (a term's type),
            span_verification ("is X a Brand?"), ner (every "term: type"), span_detection (every term)
  extract   answerability (yes on the row; no on the row with its answer cut out), extraction (the span)
  generate  attribute_extraction (from the input: EcomGPT's key#:#value input gives it, any other input
            asks the LLM), generation (the end task: the target is the row's span term)

Answers come from the rows wherever the rows carry them; every record says which (`answer_from`). All
tasks' rows are checked and every prompt rendered before the first request, so a bad definition or row
fails with one line naming the file (and line) and nothing is committed. A folder of tasks makes one
version per task (`NAME-TASK`), or one in all with `one_version`; the report's `details.tasks` is the
summary table either way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from assay.core.errors import AssayError
from assay.core.llm import LLMConfig
from assay.core.records import Record
from assay.core.store import Store
from assay.pipelines.chain_of_task_families import FAMILY_TASKS, LLM_TASKS, Chain
from assay.pipelines.chain_of_task_layout import FAMILIES, TaskDef, find_tasks, load_task
from assay.pipelines.generate import GenerationReport, GenerationRun, Generator

NER_TASKS = FAMILY_TASKS["ner"]
CLS_TASKS = FAMILY_TASKS["cls"]
ALL_TASKS = tuple(t for ts in FAMILY_TASKS.values() for t in ts)


@dataclass
class ChainOfTaskConfig:
    source: str = field(default="", metadata={
        "help": "a task's data file (JSON Lines: `sentences` plus `spans` or `labels`), a task folder "
                "(meta-info.json + train.json/test.json), a folder of task folders, or a dataset version "
                "(with `meta`)"})
    meta: str | None = field(default=None, metadata={
        "help": "the task definition (task, defi, label_sep; label_set and label_key for cls/ner); default: "
                "NAME.meta.json beside the data file, else meta-info.json in its folder"})
    family: str | None = field(default=None, metadata={
        "help": "the end task's family, instead of reading it from the task name and defi: "
                + ", ".join(FAMILIES)})
    language: str | None = field(default=None, metadata={
        "help": "the templates' language (en, zh), instead of reading it from label_key and the task name"})
    tasks: list[str] | None = field(default=None, metadata={
        "help": "atomic tasks to derive; default: all of each end task's family. "
                + "; ".join(f"{k}: {', '.join(v)}" for k, v in FAMILY_TASKS.items())})
    limit: int | None = field(default=None, metadata={"help": "use only the first N rows (of each task)"})
    one_version: bool = field(default=False, metadata={
        "help": "a folder of tasks: commit one version holding every task's records (default: one per task, "
                "named NAME-TASK)"})
    seed: int = field(default=0, metadata={"help": "seed for drawing the example sentences shown to the LLM"})
    llm_tasks: bool = field(default=True, metadata={
        "help": "run the sub-tasks that need the LLM (" + ", ".join(LLM_TASKS) + "); off: only the answers "
                "the rows carry"})
    reviews_per_label: int = field(default=1, metadata={"help": "review_generation requests per label"})
    prompts_dir: str | None = field(default=None, metadata={
        "help": "folder with the prompt templates (cot_*.j2); default: pipelines/prompts"})


def task_row(td: TaskDef, chain: Chain, report: GenerationReport | None = None) -> dict[str, Any]:
    """One line of the summary table."""
    return {"task": td.task, "family": td.family, "language": td.language, "rows": len(td.rows),
            "planned": sum(chain.planned.values()), "records": len(chain.records), "requested": len(chain.asks),
            "dropped": sum(chain.planned.values()) - len(chain.records),
            **({"ref": report.ref} if report else {})}


class ChainOfTask(Generator):
    name = "chain-of-task"
    Config = ChainOfTaskConfig

    def check(self) -> None:
        cfg: ChainOfTaskConfig = self.config
        if not cfg.source:
            raise AssayError("chain-of-task: no source given (a task file, a task folder or a folder of tasks)")
        if cfg.reviews_per_label < 0:
            raise AssayError("chain-of-task: reviews_per_label must be >= 0")
        unknown = [t for t in cfg.tasks or [] if t not in ALL_TASKS]
        if unknown:
            raise AssayError(f"chain-of-task: unknown atomic task(s) {', '.join(unknown)} (atomic tasks: "
                             f"{', '.join(ALL_TASKS)})")

    def run(self, store: Store, name: str, *, llm: LLMConfig | None = None, run_id: str | None = None,
            parents: list[str] | None = None) -> GenerationReport:
        """One version per task for a folder of tasks (unless `one_version`); else the base's one run."""
        self.check()
        cfg: ChainOfTaskConfig = self.config
        found = find_tasks(cfg.source, cfg.meta)
        if len(found) == 1 or cfg.one_version:
            return super().run(store, name, llm=llm, run_id=run_id, parents=parents)
        # check every task before the first commit, so that a bad one leaves nothing behind
        defs = [load_task(store, ts, cfg.family, cfg.language, cfg.limit) for ts in found]
        for td in defs:
            self.tasks_for(td)
        reports = []
        for ts, td in zip(found, defs):
            sub = ChainOfTask(dataclasses.replace(cfg, source=ts.data, meta=ts.meta))
            sub_run = f"{run_id}-{td.task}" if run_id else None
            reports.append(sub.run(store, f"{name}-{td.task}", llm=llm, run_id=sub_run, parents=parents))
        rows = [{**r.details["tasks"][0], "ref": r.ref} for r in reports]
        filtered: dict[str, int] = {}
        for r in reports:
            for k, v in r.filtered.items():
                filtered[k] = filtered.get(k, 0) + v
        return GenerationReport(
            self.name, None, None, sum(r.records for r in reports), requested=sum(r.requested for r in reports),
            failed=sum(r.failed for r in reports), run_id=None, filtered=filtered,
            failures=[f for r in reports for f in r.failures], dropped=[d for r in reports for d in r.dropped],
            details={"source": cfg.source, "tasks": rows, "versions": [r.ref for r in reports]})

    def tasks_for(self, td: TaskDef) -> list[str]:
        cfg: ChainOfTaskConfig = self.config
        allowed = FAMILY_TASKS[td.family]
        chosen = [t for t in cfg.tasks if t in allowed] if cfg.tasks else list(allowed)
        if not chosen:
            raise AssayError(f"chain-of-task: atomic task(s) {', '.join(cfg.tasks or [])} do not serve {td.task} "
                             f"(its atomic tasks: {', '.join(allowed)})")
        # a sub-task only the LLM can answer is left out; attribute_extraction stays (most rows answer it)
        return [t for t in chosen if cfg.llm_tasks or t != "review_generation"]

    def generate(self, run: GenerationRun) -> list[Record]:
        cfg: ChainOfTaskConfig = self.config
        found = find_tasks(cfg.source, cfg.meta)
        defs = [load_task(run.store, ts, cfg.family, cfg.language, cfg.limit) for ts in found]
        chains = [Chain(run, td, self.tasks_for(td), seed=cfg.seed, reviews_per_label=cfg.reviews_per_label,
                        llm_tasks=cfg.llm_tasks, prompts_dir=cfg.prompts_dir) for td in defs]
        for chain in chains:  # 1. the answers the rows carry, and every LLM prompt rendered
            chain.from_rows()
        for chain in chains:  # 2. the LLM's sub-tasks
            chain.finish(run.ask(chain.requests()))
        run.seed_parents = list(dict.fromkeys(p for td in defs for p in td.parents))
        mix = {td.task: {"family": td.family, "language": td.language, "atomic_tasks": chain.counts(),
                         "templates": sorted({r.provenance.template for r in chain.records})}
               for td, chain in zip(defs, chains)}
        counts: dict[str, int] = {}
        for chain in chains:
            for t, n in chain.counts().items():
                counts[t] = counts.get(t, 0) + n
        first = defs[0]
        single = {"meta": first.meta_path, "end_task": first.task, "family": first.family} if len(defs) == 1 else {}
        run.params.update(source=cfg.source, **single, atomic_tasks=counts, sub_tasks=mix)
        run.details.update(source=cfg.source, **single, rows=sum(len(td.rows) for td in defs), atomic_tasks=counts,
                           planned=sum(sum(c.planned.values()) for c in chains),
                           tasks=[task_row(td, chain) for td, chain in zip(defs, chains)])
        return [r for chain in chains for r in chain.records]

