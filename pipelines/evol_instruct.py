"""Evol-Instruct (WizardLM, Xu et al. 2023): harder and rarer instructions evolved from existing ones.

Each round, every instruction in the frontier is evolved with `ops_per_instruction` operations drawn
(with the seed) from `operations`: four in depth (add constraints, deepen, concretise, increase
reasoning steps) and one in breadth (a new instruction in the same domain), one prompt template each
(`pipelines/prompts/evol_<op>.j2`, the paper's wording). A seed's input is folded into the prompt
being evolved, as the paper's rewriter keeps it ("do not omit the input"), so the evolved record
carries it in its instruction.

Failed evolutions are eliminated, each with its reason (the paper's rules, thresholds in the config):
  copied_prompt   the reply copies the evolving prompt's words ("#Rewritten Prompt#", "given prompt", ...)
  refusal         the evolved instruction says "sorry", "as an AI", ...
  too_short       fewer than `min_words` words, or nothing but punctuation and stop words
  no_gain         ROUGE-L F against the instruction it evolved from above `similarity_threshold`
                  (the paper asks ChatGPT whether there is information gain; an overlap bound is the
                  local, deterministic stand-in)
  answer_refusal  the answer contains "sorry" and has fewer than `answer_refusal_max_words` words
  evolve_failed / answer_failed   the LLM call failed or its reply was empty (also in `failed`)
Survivors are answered with the LLM (`evol_answer.j2`), and each answered survivor is a record and
joins the next round's frontier; an instruction whose evolution was eliminated stays in the frontier
with its previous form, so it is tried again (with another operation drawn) next round.

Accounting: every evolution attempted ends as exactly one record or one elimination, so
records + sum(filtered) == attempted; and, for the LLM calls, requested == ok + failed.
Calls are keyed `evolve/ROUND/ITEM/OP` and `answer/ROUND/ITEM/OP` in one journalled run.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from assay.core.errors import AssayError, BadInput
from assay.core.llm import ParseError, Request, Result, reply_text
from assay.core.records import Record, record_id
from assay.core.sources import read_seeds
from assay.core.store import Store
from assay.core.text import rouge_l, tokens
from assay.pipelines.generate import (
    GenerationRun,
    Generator,
    load_prompt,
    render,
)

DEPTH_OPS = ("add_constraints", "deepen", "concretise", "increase_reasoning")
OPERATIONS = (*DEPTH_OPS, "breadth")
REFUSALS = ["sorry", "as an ai", "as a language model", "i cannot", "i can't", "i am unable", "i'm unable"]
# The words of the evolving prompts that must not appear in an evolved instruction (the paper's rule 4).
LEAK_MARKERS = ["given prompt", "rewritten prompt", "created prompt"]
# A small English stop-word list: an instruction made only of these says nothing (the paper's rule 3).
STOPWORDS = frozenset("""a an the and or but if of to in on at by for with from as is are was were be been it this
that these those i you he she we they me my your our their its do does did not no so than then there here
what which who whom how why when where please""".split())


@dataclass
class EvolInstructConfig:
    source: str = field(default="", metadata={
        "help": "instructions to evolve: a version (NAME, NAME@N, id) or a file (JSONL, JSON, CSV, Parquet "
                "with instruction/input/output or their aliases)"})
    rounds: int = field(default=1, metadata={"help": "evolution rounds (the paper: 4); round R evolves what "
                                                     "survived round R-1"})
    operations: list[str] = field(default_factory=lambda: list(OPERATIONS), metadata={
        "help": "operations to draw from: add_constraints, deepen, concretise, increase_reasoning (in depth), "
                "breadth (a new instruction in the same domain)"})
    ops_per_instruction: int = field(default=1, metadata={
        "help": "operations applied to each instruction each round, drawn without replacement (the paper: 1)"})
    limit: int | None = field(default=None, metadata={"help": "evolve only the first N source instructions"})
    similarity_threshold: float = field(default=0.9, metadata={
        "help": "eliminate an evolution whose ROUGE-L F against the instruction it came from is above this "
                "(no information gain; a 20-word prompt with 4 words added scores 0.91)"})
    min_words: int = field(default=3, metadata={
        "help": "eliminate evolved instructions with fewer words (or only punctuation and stop words)"})
    refusal_phrases: list[str] = field(default_factory=lambda: list(REFUSALS), metadata={
        "help": "an evolved instruction containing any of these (whole words, any case) is a refusal"})
    leak_markers: list[str] = field(default_factory=lambda: list(LEAK_MARKERS), metadata={
        "help": "an evolved instruction containing any of these (any case, '#' and spaces ignored) copied the "
                "evolving prompt"})
    answer: bool = field(default=True, metadata={
        "help": "answer the surviving instructions with the LLM (off: records with an empty output, to be "
                "answered elsewhere)"})
    answer_refusal_max_words: int = field(default=80, metadata={
        "help": "eliminate an answer containing 'sorry' with fewer words than this (the paper's rule 2); 0 = off"})
    seed: int = field(default=0, metadata={"help": "seed for drawing the operations"})
    prompts_dir: str | None = field(default=None, metadata={
        "help": "folder with the prompt templates (evol_*.j2); default: pipelines/prompts"})


# ---- elimination rules -------------------------------------------------------------------------

def _squash(text: str) -> str:
    """Lowercase, '#' and runs of whitespace as one space: "#The Given  Prompt#" -> " the given prompt "."""
    return " " + re.sub(r"[\s#]+", " ", text.lower()).strip() + " "


def check_evolution(evolved: str, original: str, cfg: EvolInstructConfig) -> tuple[str | None, float]:
    """(reason to eliminate `evolved`, or None; ROUGE-L F against `original`). Checked in this order:
    copied_prompt, refusal, too_short, no_gain."""
    score = rouge_l(evolved, original)
    squashed = _squash(evolved)
    for marker in cfg.leak_markers:
        if _squash(marker).strip() and _squash(marker)[:-1] in squashed:
            return "copied_prompt", score
    for phrase in cfg.refusal_phrases:
        if re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", evolved.replace("\u2019", "'"), re.I):
            return "refusal", score
    words = evolved.split()
    content = [t for t in tokens(evolved) if t not in STOPWORDS]
    if len(words) < cfg.min_words or not content:
        return "too_short", score
    if score > cfg.similarity_threshold:
        return "no_gain", score
    return None, score


def check_answer(answer: str, cfg: EvolInstructConfig) -> str | None:
    """The paper's rule 2: the model struggled to answer (says sorry, and the answer is short)."""
    if cfg.answer_refusal_max_words and re.search(r"\bsorry\b", answer, re.I) \
            and len(answer.split()) < cfg.answer_refusal_max_words:
        return "answer_refusal"
    return None


# ---- parsing replies ---------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*(?:\*\*)?#*\s*(?:the\s+)?(?:rewritten|created|new)\s+prompt\s*#*\s*:?\s*(?:\*\*)?\s*",
                     re.I)


def parse_evolved(raw: str) -> str:
    """The evolved instruction: the reply, less one leading "#Rewritten Prompt#:" / "#Created Prompt#:"
    header (the prompt ends with it; repeating it is formatting, not copying) and wrapping quotes.
    A header anywhere else stays, and the copied_prompt rule eliminates it. Raises ParseError if empty."""
    text = _HEADER.sub("", reply_text(raw), count=1).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if not text:
        raise ParseError("empty evolved instruction")
    return text


def parse_answer(raw: str) -> str:
    text = reply_text(raw)
    if not text:
        raise ParseError("empty answer")
    return text


# ---- seeds -------------------------------------------------------------------------------------

@dataclass
class Item:
    """An instruction in the frontier: its text (input folded in) and the record it is."""

    instruction: str
    record_id: str
    root_id: str  # the source record its lineage starts from
    depth: int = 0  # evolutions so far
    ops: list[str] = field(default_factory=list)


def fold(instruction: str, inp: str) -> str:
    return instruction.strip() + (f"\n\n{inp.strip()}" if inp and inp.strip() else "")


def load_source(store: Store, ref: str, limit: int | None) -> tuple[str, list[Item], list[str]]:
    """(label, items, parent version ids) from a version, a file or a Hub dataset; chat records and
    rows without an instruction are skipped; duplicates (same record id) are evolved once."""
    if not ref:
        raise AssayError("evol-instruct: no source given (a version, a file or hf:OWNER/NAME)")
    seeds = read_seeds(store, ref)
    items, seen = [], set()
    for row in seeds.rows:
        if row.fields.get("messages") is not None:
            continue
        instruction, inp, out = (str(row.fields.get(k) or "") for k in ("instruction", "input", "output"))
        rid = record_id(instruction, inp, out, None)
        if not instruction.strip() or rid in seen:
            continue
        seen.add(rid)
        items.append(Item(fold(instruction, inp), rid, rid))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise BadInput(seeds.label, "empty: no instructions to evolve (need Alpaca-style rows with an instruction)")
    return seeds.label, items, seeds.parents


# ---- the generator -----------------------------------------------------------------------------

class EvolInstruct(Generator):
    name = "evol-instruct"
    Config = EvolInstructConfig

    def check(self) -> None:
        cfg: EvolInstructConfig = self.config
        unknown = [op for op in cfg.operations if op not in OPERATIONS]
        if unknown or not cfg.operations:
            raise AssayError(f"evol-instruct: unknown operation(s) {', '.join(unknown) or '(none given)'} "
                             f"(operations: {', '.join(OPERATIONS)})")
        if cfg.rounds < 1:
            raise AssayError("evol-instruct: rounds must be >= 1")
        if not 1 <= cfg.ops_per_instruction <= len(cfg.operations):
            raise AssayError(f"evol-instruct: ops_per_instruction must be in [1, {len(cfg.operations)}]")
        if not 0 <= cfg.similarity_threshold <= 1:
            raise AssayError("evol-instruct: similarity_threshold must be in [0, 1]")

    def generate(self, run: GenerationRun) -> list[Record]:
        cfg: EvolInstructConfig = self.config
        prompts = {op: load_prompt(f"evol_{op}", cfg.prompts_dir) for op in cfg.operations}
        answer_prompt = load_prompt("evol_answer", cfg.prompts_dir)
        label, frontier, run.seed_parents = load_source(run.store, cfg.source, cfg.limit)
        rng = random.Random(cfg.seed)
        records: list[Record] = []
        attempted = 0

        def eliminate(reason: str, cand: dict[str, Any], **extra) -> None:
            run.drop(reason, key=cand["key"], operation=cand["op"], round=cand["round"],
                     parent_id=cand["item"].record_id, parent=cand["item"].instruction,
                     evolved=cand.get("evolved"), **extra)

        for rnd in range(cfg.rounds):
            # 1. evolve every frontier instruction with the drawn operations
            cands: list[dict[str, Any]] = []
            for i, item in enumerate(frontier):
                for op in rng.sample(cfg.operations, cfg.ops_per_instruction):
                    cands.append({"item": item, "op": op, "round": rnd + 1, "key": f"evolve/{rnd + 1}/{i}/{op}"})
            attempted += len(cands)
            results = run.ask([
                Request(c["key"], [{"role": "user", "content": render(
                    prompts[c["op"]], {"instruction": c["item"].instruction}, where=c["key"])}],
                    parse=parse_evolved) for c in cands])
            survivors = []
            for c, res in zip(cands, results):
                if not res.ok:
                    eliminate("evolve_failed", c, error_kind=res.error_kind, error=res.error)
                    continue
                c["evolved"] = res.value
                reason, score = check_evolution(res.value, c["item"].instruction, cfg)
                c["rouge_l"] = round(score, 4)
                if reason:
                    eliminate(reason, c, rouge_l=c["rouge_l"])
                else:
                    survivors.append(c)
            # 2. answer the survivors
            if cfg.answer and survivors:
                for c in survivors:
                    c["answer_key"] = "answer" + c["key"].removeprefix("evolve")
                results = run.ask([
                    Request(c["answer_key"], [{"role": "user", "content": render(
                        answer_prompt, {"instruction": c["evolved"]}, where=c["answer_key"])}],
                        parse=parse_answer) for c in survivors])
            else:
                results = [Result(key="", ok=True, value="") for _ in survivors]
            # 3. answered survivors become records and the next frontier; the rest keep their parent
            next_frontier, evolved_parents = [], set()
            for c, res in zip(survivors, results):
                if not res.ok:
                    eliminate("answer_failed", c, error_kind=res.error_kind, error=res.error)
                    continue
                reason = check_answer(res.value, cfg) if cfg.answer else None
                if reason:
                    eliminate(reason, c, answer=res.value)
                    continue
                item: Item = c["item"]
                rec = run.record(instruction=c["evolved"], output=res.value, metadata={
                    "operation": c["op"], "evolution": "breadth" if c["op"] == "breadth" else "depth",
                    "round": c["round"], "depth": item.depth + 1, "operations": [*item.ops, c["op"]],
                    "parent_instruction": item.instruction, "root_id": item.root_id,
                    "rouge_l_to_parent": c["rouge_l"], "evolve_key": c["key"],
                    "answer_key": c.get("answer_key")}, template=f"evol_{c['op']}", parent_ids=[item.record_id])
                records.append(rec)
                next_frontier.append(Item(c["evolved"], rec.id, item.root_id, item.depth + 1,
                                          [*item.ops, c["op"]]))
                evolved_parents.add(id(item))
            # an instruction none of whose evolutions survived is tried again next round
            frontier = next_frontier + [it for it in frontier if id(it) not in evolved_parents]

        assert len(records) + sum(run.filtered.values()) == attempted  # every attempt ends exactly once
        run.params.update(source=label, attempted=attempted)
        run.details.update(source=label, attempted=attempted, operations={
            op: sum(1 for r in records if r.metadata["operation"] == op) for op in cfg.operations})
        return records
