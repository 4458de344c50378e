"""Self-Instruct (Wang et al., 2023): new instructions bootstrapped from a handful of seed tasks.

1. Prompt with a mix of human (seed) and machine tasks (6 + 2, as in the paper; all human until the
   machine pool has some) and parse the new instructions from the reply (a numbered list, tolerantly).
2. Keep an instruction only if it passes the filters (all thresholds in `SelfInstructConfig`):
   length in words, a keyword blacklist (tasks a text model cannot do: images, files, ...), no
   leading punctuation or non-ASCII, not "write a program", and ROUGE-L at most 0.7 against every
   instruction already in the pool (seeds and kept machine tasks). Every rejection keeps its reason.
3. Ask whether each kept instruction is a classification task, then generate an instance: input
   first, or output (the class label) first for classification tasks, so labels are not skewed
   toward whatever input the model happens to write first.

ROUGE-L is `assay.core.text.rouge_l` (the trainer's evaluation uses the same one).

Every LLM call goes through one journalled run (keys `tasks/R/I`, `classify/K`, `instances/K`), so a
killed run resumes, and every failed call or unparsable reply stays in the journal with its raw reply
and is counted in the report's `failed`.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from assay.core.errors import AssayError, BadInput
from assay.core.llm import ParseError, Request, parse_json
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

# From the paper's code (self_instruct/bootstrap_instructions.py): tasks a language model cannot do.
BLACKLIST = ["image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
             "draw", "plot", "go to", "video", "audio", "flowchart", "diagram"]


@dataclass
class SelfInstructConfig:
    seeds: str = field(default="", metadata={
        "help": "seed tasks: a file (Self-Instruct seed_tasks.jsonl format, or instruction/input/output rows) "
                "or a version (NAME, NAME@N, id)"})
    n: int = field(default=10, metadata={"help": "new instructions to generate"})
    human_per_prompt: int = field(default=6, metadata={"help": "seed (human) tasks shown in each prompt"})
    machine_per_prompt: int = field(default=2, metadata={
        "help": "machine tasks shown in each prompt (human ones fill in while the machine pool is smaller)"})
    new_per_prompt: int = field(default=4, metadata={"help": "new tasks each prompt asks for"})
    prompts_per_round: int = field(default=4, metadata={"help": "most prompts sent in one round"})
    max_rounds: int = field(default=5, metadata={
        "help": "stop after this many rounds even if fewer than n instructions survived the filters"})
    rouge_threshold: float = field(default=0.7, metadata={
        "help": "drop an instruction whose ROUGE-L F to any instruction in the pool is above this"})
    min_words: int = field(default=4, metadata={"help": "drop instructions with fewer words (paper: <= 3 dropped)"})
    max_words: int = field(default=150, metadata={"help": "drop instructions with more words"})
    blacklist: list[str] = field(default_factory=lambda: list(BLACKLIST), metadata={
        "help": "drop instructions containing any of these words or phrases (whole words, any case)"})
    detect_classification: bool = field(default=True, metadata={
        "help": "ask the model whether each new task is a classification task (output-first instances); "
                "off: every task is generated input first"})
    seed: int = field(default=0, metadata={"help": "seed for sampling the in-prompt tasks"})
    prompts_dir: str | None = field(default=None, metadata={
        "help": "folder with the prompt templates (self_instruct_*.j2); default: pipelines/prompts"})


# ---- ROUGE-L and the filters -------------------------------------------------------------------

def check_instruction(text: str, cfg: SelfInstructConfig) -> str | None:
    """The reason to drop `text` before the similarity check, or None to keep it."""
    words = text.split()
    if len(words) < cfg.min_words:
        return "too_short"
    if len(words) > cfg.max_words:
        return "too_long"
    for word in cfg.blacklist:
        if re.search(rf"\b{re.escape(word)}\b", text, re.I):
            return f"blacklisted:{word}"
    if re.match(r"write a program", text, re.I):  # the paper drops these: outputs cannot be checked
        return "program"
    if not text[0].isalnum() and text[0] not in "\"'(":
        return "starts_with_punctuation"
    if not text[0].isascii():
        return "non_ascii_start"
    return None


class Pool:
    """Instructions so far (seeds, then kept machine tasks), tokenised once."""

    def __init__(self, texts: list[str]):
        self.texts: list[str] = []
        self._tokens: list[list[str]] = []
        for t in texts:
            self.add(t)

    def add(self, text: str) -> None:
        self.texts.append(text)
        self._tokens.append(tokens(text))

    def most_similar(self, text: str) -> tuple[float, str | None]:
        t = tokens(text)
        best, who = 0.0, None
        for other, ot in zip(self.texts, self._tokens):
            score = rouge_l(t, ot)
            if score > best:
                best, who = score, other
        return best, who


# ---- parsing replies ---------------------------------------------------------------------------

_NUMBERED = re.compile(r"^\s*(?:\*\*)?(?:task\s*)?(\d{1,3})\s*[.):]\s*(?:\*\*)?\s*(.*)$", re.I)
_LABEL = re.compile(r"^\s*(?:new\s+)?(?:task|instruction)\s*\d*\s*[:.]\s*", re.I)


def parse_instructions(raw: str) -> list[str]:
    """New instructions from a reply to the tasks prompt: numbered lines (`9. ...`, `Task 9: ...`,
    `9) ...`); the text before the first number continues the prompt's open `N.`; lines without a
    number continue the item above. Raises ParseError when nothing is left."""
    stripped = (raw or "").strip()
    if stripped[:1] in "{[":  # some models answer a list in JSON: take its strings
        try:
            found = _strings(parse_json(stripped))
        except ParseError:
            found = []
        if found:
            raw = "\n\n".join(found)
    items: list[str] = []
    current: list[str] | None = None
    for line in (raw or "").splitlines():
        m = _NUMBERED.match(line)
        if m:
            if current:
                items.append(" ".join(current))
            current = [m.group(2).strip()] if m.group(2).strip() else []
        elif line.strip():
            if current is None:
                current = []
            current.append(line.strip())
        elif current:  # a blank line ends an item
            items.append(" ".join(current))
            current = None
    if current:
        items.append(" ".join(current))
    out = []
    for item in items:
        item = _LABEL.sub("", item.replace("**", "")).strip()
        if item and item not in out:
            out.append(item)
    if not out:
        raise ParseError("no instructions in the reply")
    return out


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def parse_yes_no(raw: str) -> bool:
    """Yes/No from a reply to the classification question; also "(is) not a classification task"."""
    text = raw or ""
    m = re.search(r"\b(yes|no)\b|(\bnot|n't)\s+(?:be\s+)?(?:regarded\s+as\s+)?(?:a\s+)?classification\b"
                  r"|\bis\s+(?:a\s+)?classification\b", text, re.I)
    if not m:
        raise ParseError("no Yes or No in the reply")
    if m.group(1):
        return m.group(1).lower() == "yes"
    return not m.group(2)


_NOINPUT = {"", "<noinput>", "noinput", "none", "n/a", "not applicable", "<no input>"}


def _section(raw: str, name: str, others: list[str]) -> str | None:
    m = re.search(rf"(?im)^\s*{name}\s*:\s*", raw)
    if not m:
        return None
    rest = raw[m.end():]
    stops = [s.start() for o in others for s in [re.search(rf"(?im)^\s*{o}\s*:", rest)] if s]
    stops += [s.start() for s in [re.search(r"(?m)^\s*Task\s*:", rest)] if s]  # the model started another
    return rest[:min(stops)].strip() if stops else rest.strip()


def parse_instance(raw: str) -> dict[str, str]:
    """`Input: ... Output: ...` (input first). A reply with no `Output:` is taken as the output of a
    task that needs no input. Raises ParseError on an empty output."""
    text = (raw or "").strip()
    out = _section(text, "Output", ["Input"])
    inp = _section(text, "Input", ["Output"])
    if out is None:
        out, inp = (text if inp is None else ""), inp
    inp = "" if inp is None or inp.strip().lower() in _NOINPUT else inp
    if not out.strip():
        raise ParseError("empty output in the reply")
    return {"input": inp, "output": out.strip()}


def parse_instance_output_first(raw: str) -> dict[str, str]:
    """Reply to the output-first prompt, which ends with `Class label:`: the label, then `Input: ...`."""
    text = (raw or "").strip()
    label = _section(text, "Class label", ["Input"])
    inp = _section(text, "Input", ["Class label"])
    if label is None:  # the reply continues the prompt's open "Class label:"
        label = re.split(r"(?im)^\s*Input\s*:", text, maxsplit=1)[0].strip()
    if not label:
        raise ParseError("no class label in the reply")
    inp = "" if inp is None or inp.strip().lower() in _NOINPUT else inp
    return {"input": inp, "output": label}


# ---- seeds -------------------------------------------------------------------------------------

@dataclass
class Seed:
    instruction: str
    is_classification: bool
    ids: list[str]  # record ids of its instances, as `assay import` makes them


def load_seeds(store: Store, ref: str) -> tuple[str, list[Seed], list[str]]:
    """(label, seeds, parent version ids). A file: Self-Instruct seed tasks (instruction + instances)
    or instruction/input/output rows; a version: its records grouped by instruction."""
    if not ref:
        raise AssayError("self-instruct: no seeds given (a seed file, a version or hf:OWNER/NAME)")
    source = read_seeds(store, ref)
    by_instruction: dict[str, Seed] = {}

    def add(instruction: str, inp: str, out: str, is_cls: Any) -> None:
        instruction = instruction.strip()
        if not instruction:
            return
        seed = by_instruction.setdefault(instruction, Seed(instruction, bool(is_cls), []))
        seed.ids.append(record_id(instruction, inp, out, None))

    for row in source.rows:
        fields_, instr = row.fields, row.fields.get("instruction")
        if not isinstance(instr, str):
            if source.parents:  # a chat record of a version is no seed task
                continue
            raise BadInput(source.label, "missing or not text", line=row.pos, unit=source.unit, field="instruction")
        if isinstance(fields_.get("instances"), list):
            for inst in fields_["instances"] or [{}]:
                add(instr, str(inst.get("input") or ""), str(inst.get("output") or ""),
                    fields_.get("is_classification"))
        else:
            add(instr, str(fields_.get("input") or ""), str(fields_.get("output") or ""),
                fields_.get("is_classification"))
    if not by_instruction:
        raise BadInput(source.label, "empty: no seed tasks (need rows with an instruction)")
    return source.label, list(by_instruction.values()), source.parents


# ---- the generator -----------------------------------------------------------------------------

class SelfInstruct(Generator):
    name = "self-instruct"
    Config = SelfInstructConfig

    def check(self) -> None:
        cfg: SelfInstructConfig = self.config
        if cfg.n < 1:
            raise AssayError("self-instruct: n must be >= 1")
        if not 0 <= cfg.rouge_threshold <= 1:
            raise AssayError("self-instruct: rouge_threshold must be in [0, 1]")

    def generate(self, run: GenerationRun) -> list[Record]:
        cfg: SelfInstructConfig = self.config
        # load and check everything that can fail on user input before the first request
        prompts = {k: load_prompt(f"self_instruct_{k}", cfg.prompts_dir)
                   for k in ("tasks", "is_classification", "instances", "instances_output_first")}
        label, seeds, run.seed_parents = load_seeds(run.store, cfg.seeds)
        rng = random.Random(cfg.seed)
        pool = Pool([s.instruction for s in seeds])
        machine: list[dict[str, Any]] = []  # kept: instruction, key, parent_ids, rouge, similar_to
        rounds = 0
        while len(machine) < cfg.n and rounds < cfg.max_rounds:
            want = cfg.n - len(machine)
            count = min(cfg.prompts_per_round, max(1, math.ceil(want / cfg.new_per_prompt)))
            requests, shown = [], {}
            for i in range(count):
                m = rng.sample(machine, min(cfg.machine_per_prompt, len(machine)))
                h = rng.sample(seeds, min(cfg.human_per_prompt + cfg.machine_per_prompt - len(m), len(seeds)))
                examples = [s.instruction for s in h] + [x["instruction"] for x in m]
                rng.shuffle(examples)
                key = f"tasks/{rounds}/{i}"
                shown[key] = [pid for s in h for pid in s.ids[:1]]
                text = render(prompts["tasks"], {"tasks": examples, "num_new": cfg.new_per_prompt})
                requests.append(Request(key, [{"role": "user", "content": text}], parse=parse_instructions))
            for res in run.ask(requests):
                if not res.ok:
                    continue
                for instruction in res.value:
                    if len(machine) >= cfg.n:
                        run.drop("enough", instruction=instruction, key=res.key)
                        continue
                    reason = check_instruction(instruction, cfg)
                    if reason:
                        run.drop(reason, instruction=instruction, key=res.key)
                        continue
                    score, similar = pool.most_similar(instruction)
                    if score > cfg.rouge_threshold:
                        run.drop("similar", instruction=instruction, key=res.key, rouge_l=round(score, 4),
                                 similar_to=similar)
                        continue
                    pool.add(instruction)
                    machine.append({"instruction": instruction, "key": res.key, "parent_ids": shown[res.key],
                                    "rouge_l_max": round(score, 4), "similar_to": similar})
            rounds += 1

        # is it a classification task? (decides input-first vs output-first instances)
        if cfg.detect_classification and machine:
            results = run.ask([Request(f"classify/{k}", [{"role": "user", "content": render(
                prompts["is_classification"], {"instruction": m["instruction"]})}], parse=parse_yes_no)
                for k, m in enumerate(machine)])
            for m, res in zip(machine, results):
                m["is_classification"] = bool(res.ok and res.value)  # a failed check: input first
                m["classify_key"] = res.key
        reqs = []
        for k, m in enumerate(machine):
            m.setdefault("is_classification", False)
            which = "instances_output_first" if m["is_classification"] else "instances"
            m["template"] = f"self_instruct_{which}"
            parse = parse_instance_output_first if m["is_classification"] else parse_instance
            reqs.append(Request(f"instances/{k}", [{"role": "user", "content": render(
                prompts[which], {"instruction": m["instruction"]})}], parse=parse))
        records: list[Record] = []
        for m, res in zip(machine, run.ask(reqs)):
            if not res.ok:
                continue  # counted in failed, listed in failures, kept in the journal
            records.append(run.record(
                instruction=m["instruction"], input=res.value["input"], output=res.value["output"],
                metadata={"is_classification": m["is_classification"], "instruction_key": m["key"],
                          "instance_key": res.key, "rouge_l_max": m["rouge_l_max"], "similar_to": m["similar_to"]},
                template=m["template"], parent_ids=m["parent_ids"]))
        run.params.update(seeds=label, rounds=rounds)
        run.details.update(seeds=len(seeds), rounds=rounds, kept_instructions=[m["instruction"] for m in machine])
        return records
