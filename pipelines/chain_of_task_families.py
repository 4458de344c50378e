"""Chain-of-Task's atomic sub-tasks, per family (`pipelines/chain_of_task.py` runs them; docs/generators.md).

`Chain(run, td, tasks, config)` makes one end task's records: first every answer the rows carry (no
LLM), then the requests for the sub-tasks that need text the rows do not hold (every prompt rendered
before the first is sent). Each record's metadata says where its answer came from (`answer_from`:
"row" or "llm"); `planned` counts each sub-task's instances, so that planned = records + dropped.
Prompts are `cot_<atomic task>.j2` (English) and `cot_<atomic task>_zh.j2` (Chinese); the template id
is the file's name without `cot_`, and a record's fixed words (yes/no/none) are in the same language.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any, Callable

from assay.core.llm import ParseError, Request, Result, reply_text
from assay.core.records import Record
from assay.pipelines.chain_of_task_layout import TaskDef
from assay.pipelines.generate import GenerationRun, load_prompt, render

FAMILY_TASKS = {
    "cls": ("topic_classification", "label_verification", "review_generation"),
    "ner": ("entity_extraction", "span_classification", "span_verification", "ner", "span_detection"),
    "extract": ("answerability", "extraction"),
    "generate": ("attribute_extraction", "generation"),
}
# sub-tasks that ask the LLM: review_generation always, attribute_extraction only for an input that is
# not EcomGPT's structured `key#:#value#;#...` (whose attributes the row itself gives)
LLM_TASKS = ("review_generation", "attribute_extraction")
WORDS = {"en": {"yes": "yes", "no": "no", "none": "None",
                "review": 'Write a short customer review about the topic "{}".'},
         "zh": {"yes": "是", "no": "否", "none": "无", "review": "写一条关于“{}”的简短顾客评论。"}}
ATTR_SEP, PAIR_SEP = "#;#", "#:#"  # EcomGPT's structured attribute input


def unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def parse_review(raw: str) -> str:
    text = reply_text(raw).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    elif text[:1] == '"' and text.count('"') == 1:  # an opening quote whose close was cut off by max_tokens
        text = text[1:].strip()
    if not text:
        raise ParseError("empty review")
    return text


def structured_attributes(text: str) -> list[tuple[str, str]] | None:
    """The (key, value) pairs of EcomGPT's `k#:#v#;#k#:#v` input, or None for any other text."""
    parts = text.split(ATTR_SEP)
    pairs = [p.split(PAIR_SEP, 1) for p in parts]
    if not all(len(p) == 2 and p[0].strip() and p[1].strip() for p in pairs):
        return None
    return [(k.strip(), v.strip()) for k, v in pairs]


def parse_attributes(raw: str, source: str) -> list[tuple[str, str]]:
    """`key: value` lines (ASCII or full-width colon; list markers allowed) from an LLM reply, each value
    found in the input `source`: an attribute extracted *from the input*, not made up (nor the
    prompt's example echoed)."""
    pairs, text = [], source.casefold()
    for line in reply_text(raw).splitlines():
        m = re.match(r"^\s*(?:[-*•]|\d+[.)])?\s*([^:：]{1,40}?)\s*[:：]\s*(.+?)[\s.。]*$", line)
        if m and m.group(2).strip("\"'“”").casefold() in text:
            pairs.append((m.group(1).strip("\"'“”"), m.group(2).strip("\"'“”")))
    if not pairs:
        raise ParseError("no 'key: value' line whose value is in the input")
    return pairs


def without_terms(sentence: str, terms: list[str], sep: str) -> str | None:
    """The sentence with every term cut out (with one separator next to it, so that no empty slot gives
    the cut away); None if a term does not occur in it."""
    for term in terms:
        for cut in (term + sep, sep + term, term):
            if cut in sentence:
                sentence = sentence.replace(cut, "", 1)
                break
        else:
            return None
    return sentence


class Chain:
    """One end task's atomic records."""

    def __init__(self, run: GenerationRun, td: TaskDef, tasks: list[str], *, seed: int, reviews_per_label: int,
                 llm_tasks: bool, prompts_dir: str | None):
        self.run, self.td, self.tasks = run, td, tasks
        self.seed, self.reviews_per_label, self.llm_tasks = seed, reviews_per_label, llm_tasks
        self.words = WORDS[td.language]
        self.suffix = "_zh" if td.language == "zh" else ""
        self.prompts = {t: load_prompt(f"cot_{t}{self.suffix}", prompts_dir) for t in tasks}
        self.common = {"labels": td.sep.join(td.labels), "sep": td.sep, "defi": td.meta.get("defi") or td.task,
                       "nothing": self.words["none"], "yes": self.words["yes"], "no": self.words["no"]}
        self.records: list[Record] = []
        self.planned: Counter[str] = Counter()
        self.asks: list[tuple[Request, Callable[[Any], None], str]] = []  # request, on-success, task

    # ---- helpers -----------------------------------------------------------------------------
    def prompt(self, task: str, variables: dict[str, Any], where: str) -> str:
        return render(self.prompts[task], {**self.common, **variables}, where=where)

    def meta(self, task: str, line: int | None, answer_from: str, extra: dict[str, Any]) -> dict[str, Any]:
        return {"end_task": self.td.task, "atomic_task": task, "family": self.td.family,
                "language": self.td.language, "defi": self.td.meta.get("defi"), "line": line,
                "answer_from": answer_from, **extra}

    def add(self, task: str, variables: dict[str, Any], output: str, line: int, rid: str | None, **extra) -> None:
        """A record whose answer the row gives."""
        self.planned[task] += 1
        instruction = self.prompt(task, variables, f"{self.td.data} line {line}")
        self.records.append(self.run.record(
            instruction=instruction, output=output, metadata=self.meta(task, line, "row", extra),
            template=task + self.suffix, source=self.td.data, source_row=line, parent_ids=[rid] if rid else None))

    def skip(self, task: str, reason: str, **detail) -> None:
        self.planned[task] += 1
        self.run.drop(reason, end_task=self.td.task, atomic_task=task, **detail)

    def ask(self, task: str, key: str, content: str, parse, on_ok: Callable[[Any], None]) -> None:
        self.planned[task] += 1
        self.asks.append((Request(key, [{"role": "user", "content": content}], parse=parse), on_ok, task))

    def yes_no(self, flag: bool) -> str:
        return self.words["yes"] if flag else self.words["no"]

    def joined(self, items: list[str]) -> str:
        return self.td.sep.join(items) if items else self.words["none"]

    # ---- the rows' answers, per family -------------------------------------------------------
    def from_rows(self) -> None:
        getattr(self, f"rows_{self.td.family}")()

    def rows_ner(self) -> None:
        t, labels = self.tasks, self.td.labels
        for line, row, rid in self.td.rows:
            sentence, spans = row["sentences"], row["spans"]
            terms = unique([s["term"] for s in spans])
            v = {"sentence": sentence}
            if "entity_extraction" in t:
                for typ in labels:
                    got = unique([s["term"] for s in spans if s["type"] == typ])
                    self.add("entity_extraction", {**v, "type": typ}, self.joined(got), line, rid, entity_type=typ,
                             present=bool(got))
            for term in terms:
                types = unique([s["type"] for s in spans if s["term"] == term])
                first = next(s for s in spans if s["term"] == term)
                if "span_classification" in t:
                    if len(types) > 1:  # a term tagged with two types in one sentence has no single answer
                        self.skip("span_classification", "ambiguous_span", term=term, line=line)
                    else:
                        self.add("span_classification", {**v, "term": term}, types[0], line, rid, term=term,
                                 start=first["start"], end=first["end"])
                if "span_verification" in t:
                    for typ in labels:
                        self.add("span_verification", {**v, "term": term, "type": typ}, self.yes_no(typ in types),
                                 line, rid, term=term, entity_type=typ)
            if "ner" in t:
                self.add("ner", v, self.joined(unique([f"{s['term']}: {s['type']}" for s in spans])), line, rid)
            if "span_detection" in t:
                self.add("span_detection", v, self.joined(terms), line, rid)

    def rows_cls(self) -> None:
        for line, row, rid in self.td.rows:
            v, got = {"sentence": row["sentences"]}, row["_labels"]
            if "topic_classification" in self.tasks:
                self.add("topic_classification", v, self.td.sep.join(got), line, rid, labels=got)
            if "label_verification" in self.tasks:
                for lab in self.td.labels:
                    self.add("label_verification", {**v, "label": lab}, self.yes_no(lab in got), line, rid, label=lab)
        if "review_generation" in self.tasks and self.llm_tasks:
            self.reviews()

    def rows_extract(self) -> None:
        for line, row, rid in self.td.rows:
            sentence, terms = row["sentences"], unique([s["term"] for s in row["spans"]])
            if "answerability" in self.tasks:
                self.add("answerability", {"sentence": sentence}, self.yes_no(bool(terms)), line, rid,
                         variant="as_given")
                if terms:  # the same text with its answer cut out cannot answer the task
                    cut = without_terms(sentence, terms, self.td.sep)
                    if cut is None:
                        self.skip("answerability", "span_not_in_text", line=line, terms=terms)
                    else:
                        self.add("answerability", {"sentence": cut}, self.words["no"], line, rid,
                                 variant="answer_removed")
            if "extraction" in self.tasks:
                self.add("extraction", {"sentence": sentence}, self.joined(terms), line, rid)

    def rows_generate(self) -> None:
        for line, row, rid in self.td.rows:
            sentence = row["sentences"]
            v = {"sentence": sentence}
            if "attribute_extraction" in self.tasks:
                pairs = structured_attributes(sentence)
                if pairs is not None:
                    self.add("attribute_extraction", v, self.td.sep.join(unique([f"{k}: {x}" for k, x in pairs])),
                             line, rid, attributes=pairs)
                elif not self.llm_tasks:
                    self.skip("attribute_extraction", "needs_llm", line=line)
                else:
                    self.attribute_request(line, rid, sentence)
            if "generation" in self.tasks:
                # the target is the row's span term (EcomGPT puts the generation's answer there)
                self.add("generation", v, row["spans"][0]["term"], line, rid)

    # ---- the LLM's sub-tasks -------------------------------------------------------------------
    def attribute_request(self, line: int, rid: str | None, sentence: str) -> None:
        key = f"{self.td.task}/attributes/{line}"
        content = self.prompt("attribute_extraction", {"sentence": sentence}, key)

        def done(pairs: list[tuple[str, str]]) -> None:
            self.records.append(self.run.record(
                instruction=content, output=self.td.sep.join(unique([f"{k}: {x}" for k, x in pairs])),
                metadata=self.meta("attribute_extraction", line, "llm", {"llm_key": key, "attributes": pairs}),
                template="attribute_extraction" + self.suffix, source_row=line, parent_ids=[rid] if rid else None))
        self.ask("attribute_extraction", key, content, lambda raw: parse_attributes(raw, sentence), done)

    def reviews(self) -> None:
        """`reviews_per_label` requests per label, each shown an example row with that label (drawn with
        the seed); the record: the label is the instruction, the review the answer."""
        rng = random.Random(self.seed)
        rows = self.td.rows
        for lab in self.td.labels:
            having = [(line, r["sentences"]) for line, r, _ in rows if lab in r["_labels"]]
            for k in range(self.reviews_per_label):
                example = rng.choice(having) if having else (None, "")
                key = f"{self.td.task}/review/{lab}/{k}"
                content = self.prompt("review_generation", {"label": lab, "example": example[1]}, key)

                def done(text: str, lab=lab, key=key, content=content, example_line=example[0]) -> None:
                    self.records.append(self.run.record(
                        instruction=self.words["review"].format(lab), output=text, metadata=self.meta(
                            "review_generation", None, "llm", {"label": lab, "llm_key": key, "prompt": content,
                                                               "example_line": example_line}),
                        template="review_generation" + self.suffix))
                self.ask("review_generation", key, content, parse_review, done)

    def requests(self) -> list[Request]:
        return [req for req, _, _ in self.asks]

    def finish(self, results: list[Result]) -> None:
        for (req, on_ok, task), res in zip(self.asks, results):
            if res.ok:
                on_ok(res.value)
            else:
                self.run.drop(f"{task}_failed", end_task=self.td.task, atomic_task=task, key=req.key)

    def counts(self) -> dict[str, int]:
        return {t: sum(1 for r in self.records if r.metadata["atomic_task"] == t) for t in self.tasks}
