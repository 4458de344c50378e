"""A development set for the contamination auditor, built from data on this machine.

Benchmark items are planted, verbatim and rephrased, among clean instruction records; the labels say
which records are copies of which item. The rephrasings are programmatic and seeded, so the set is
the same on every machine:

- HumanEval (prompt + canonical solution): identifiers renamed (function, arguments, locals), `for`
  loops rewritten as `while` loops, list comprehensions as loops and append-loops as comprehensions,
  adjacent independent assignments swapped, the docstring's prose (its examples dropped) reworded with
  synonyms and a template (or dropped); the
  record asks for the program in its own words and answers with the code, fenced or bare.
- GSM8K test questions: words swapped for synonyms, the question sentence moved first, a template
  frame around it.

`llm_rephrasings` adds rephrasings written by an LLM through the project's client (journalled, cached):
`bench/contamination_devset_eval.py --llm-items N` measures the code tier on those with the embedded
model.

Items are split in two halves by a seeded shuffle: `tune` (thresholds are chosen on it) and
`held-out` (the documented P/R/F1 are measured on it); clean records are split the same way.
"""

from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass

from .code_canon import LoopRewriter, extract_code

_WORDS = ["data", "values", "items", "seq", "arr", "nums", "text", "word", "acc", "res", "count", "idx", "pos",
          "cur", "val", "elem", "part", "chunk", "key", "node", "total", "best", "tmp", "out", "src", "buf"]
_FUNC_WORDS = ["solve", "compute", "process", "helper", "calc", "find_answer", "do_task", "transform", "check",
               "evaluate", "get_result", "run"]
_ASK = ["Write a Python function `{name}` for this task: {desc}",
        "Implement `{name}`. {desc}",
        "{desc}\nPlease write the code in Python (function name: {name}).",
        "Create a function called {name}. Requirements: {desc}"]
_DOC = ["{desc}", "Task: {desc}", "This function does the following. {desc}", "{desc} Return the result."]
_SYNONYMS = {"bought": "purchased", "buys": "purchases", "has": "owns", "have": "own", "each": "every",
             "total": "overall", "How many": "What number of", "how many": "what number of", "gets": "receives",
             "makes": "earns", "sells": "sold", "spent": "paid", "wants": "would like", "needs": "requires",
             "started": "began", "starts": "begins", "If": "Suppose", "then": "after that", "finds": "discovers"}
_DESC_SYNONYMS = {"Return": "Give back", "return": "give back", "given": "provided", "Given": "Provided",
                  "list": "sequence", "string": "text", "number": "value", "numbers": "values",
                  "integer": "whole number",
                  "integers": "whole numbers", "function": "routine", "Write": "Create", "write": "create",
                  "if": "when", "each": "every", "element": "entry", "elements": "entries",
                  "returns": "gives back", "input": "argument", "should": "must", "Check": "Test", "check": "test",
                  "find": "compute", "Find": "Compute", "number of": "count of", "contains": "holds"}
_FRAMES = ["{q}", "Solve this word problem: {q}", "Here is a math question. {q}", "{q} Show your reasoning.",
           "Question: {q}"]


@dataclass
class DevRecord:
    instruction: str
    input: str
    output: str
    benchmark: str | None  # None: a clean record
    item: str | None
    kind: str  # clean, verbatim, rephrased
    split: str  # tune or held-out

    def row(self) -> dict:
        return {"instruction": self.instruction, "input": self.input, "output": self.output}


# ---- code rephrasings -------------------------------------------------------------------------------

class _Rename(ast.NodeTransformer):
    def __init__(self, mapping: dict[str, str]):
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self.mapping.get(node.id, node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self.mapping.get(node.arg, node.arg)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.name = self.mapping.get(node.name, node.name)
        self.generic_visit(node)
        return node


def _rename(tree: ast.Module, rng: random.Random) -> dict[str, str]:
    defined: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            defined.append(node.name)
        elif isinstance(node, ast.arg):
            defined.append(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.append(node.id)
    mapping: dict[str, str] = {}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    for name in dict.fromkeys(defined):
        pool = _FUNC_WORDS if any(isinstance(n, ast.FunctionDef) and n.name == name for n in ast.walk(tree)) \
            else _WORDS
        new = rng.choice(pool)
        while new in used or new in mapping.values():
            new = f"{rng.choice(pool)}_{rng.randint(1, 99)}"
        mapping[name] = new
    _Rename(mapping).visit(tree)
    return mapping


def _names(node: ast.AST, store: bool) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) == store}


def _reorder(tree: ast.Module, rng: random.Random) -> None:
    """Swap adjacent assignments that neither read nor write each other's names."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for i in range(len(body) - 1):
            a, b = body[i], body[i + 1]
            if isinstance(a, ast.Assign) and isinstance(b, ast.Assign) and rng.random() < 0.8:
                wa, wb = _names(a, True), _names(b, True)
                if not (wa & (_names(b, False) | wb)) and not (wb & _names(a, False)):
                    body[i], body[i + 1] = b, a


def _doc_description(doc: str) -> str:
    """The prose of a HumanEval docstring: the lines before its examples."""
    prose = []
    for line in doc.strip().splitlines():
        if line.strip().startswith((">>>", "Example", "For example", "for example")):
            break
        prose.append(line.strip())
    return re.sub(r"\s+", " ", " ".join(prose)).strip() or "Solve the problem."


def rephrase_program(prompt: str, solution: str, rng: random.Random) -> tuple[str, str, str]:
    """(the program rephrased, its new entry-point name, its reworded description)."""
    tree = ast.parse(prompt + solution)
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    entry = funcs[-1]
    doc = ast.get_docstring(entry) or ""
    desc = _swap_words(_doc_description(doc), _DESC_SYNONYMS, rng, 0.9)
    if entry.body and isinstance(entry.body[0], ast.Expr) and isinstance(entry.body[0].value, ast.Constant):
        entry.body = entry.body[1:] or [ast.Pass()]
    comp = rng.random() < 0.8
    tree = LoopRewriter(for_while=rng.random() < 0.8, comp_to_loop=comp, loop_to_comp=comp).visit(tree)
    if rng.random() < 0.7:
        _reorder(tree, rng)
    mapping = _rename(tree, rng)
    if rng.random() < 0.6:  # a reworded docstring; else none (the description lives in the request)
        entry.body.insert(0, ast.Expr(ast.Constant(rng.choice(_DOC).format(desc=desc))))
    ast.fix_missing_locations(tree)
    return ast.unparse(tree) + "\n", mapping.get(entry.name, entry.name), desc


# ---- natural-language rephrasings ---------------------------------------------------------------------

def _swap_words(text: str, table: dict[str, str], rng: random.Random, p: float = 0.7) -> str:
    for old, new in table.items():
        if rng.random() < p:
            text = re.sub(rf"\b{re.escape(old)}\b", new, text)
    return text


def rephrase_question(question: str, rng: random.Random) -> str:
    text = _swap_words(question, _SYNONYMS, rng)
    sentences = re.split(r"(?<=[.?!])\s+", text.strip())
    if len(sentences) > 2 and sentences[-1].endswith("?") and rng.random() < 0.6:
        sentences = [sentences[-1]] + sentences[:-1]  # the question first, then the facts
    return rng.choice(_FRAMES).format(q=" ".join(sentences))


# ---- the sets -----------------------------------------------------------------------------------------

def _splits(n: int, rng: random.Random) -> list[str]:
    order = list(range(n))
    rng.shuffle(order)
    out = [""] * n
    for rank, i in enumerate(order):
        out[i] = "tune" if rank % 2 == 0 else "held-out"
    return out


def code_devset(clean: list[dict], human_eval: list[dict], *, seed: int = 0, verbatim: int = 20) -> list[DevRecord]:
    """Clean rows (instruction, input, output) plus every HumanEval item rephrased once, and `verbatim`
    items copied verbatim (prompt + solution as the response), shuffled together."""
    rng = random.Random(seed)
    item_split = _splits(len(human_eval), rng)
    records = [DevRecord(r["instruction"], r.get("input", ""), r["output"], None, None, "clean", s)
               for r, s in zip(clean, _splits(len(clean), rng))]
    for problem, split in zip(human_eval, item_split):
        code, name, desc = rephrase_program(problem["prompt"], problem["canonical_solution"], rng)
        answer = f"```python\n{code}```" if rng.random() < 0.5 else code
        records.append(DevRecord(rng.choice(_ASK).format(name=name, desc=desc), "", answer, "human-eval",
                                 problem["task_id"], "rephrased", split))
    for i in rng.sample(range(len(human_eval)), verbatim):
        p = human_eval[i]
        records.append(DevRecord("Complete the following Python function.", p["prompt"], p["prompt"] +
                                 p["canonical_solution"], "human-eval", p["task_id"], "verbatim", item_split[i]))
    rng.shuffle(records)
    return records


def gsm8k_devset(clean: list[dict], questions: list[dict], *, seed: int = 0, n: int = 200,
                 name: str = "gsm8k_test") -> list[DevRecord]:
    """Clean rows plus n GSM8K test questions rephrased (items named `line N` as the benchmark loader
    names a JSONL file's rows)."""
    rng = random.Random(seed)
    picks = sorted(rng.sample(range(len(questions)), min(n, len(questions))))
    item_split = _splits(len(picks), rng)
    records = [DevRecord(r["instruction"], r.get("input", ""), r["output"], None, None, "clean", s)
               for r, s in zip(clean, _splits(len(clean), rng))]
    for i, split in zip(picks, item_split):
        q = questions[i]
        records.append(DevRecord(rephrase_question(q["question"], rng), "", q["answer"], name, f"line {i + 1}",
                                 "rephrased", split))
    rng.shuffle(records)
    return records


# ---- rephrasings by an LLM ----------------------------------------------------------------------------

LLM_REPHRASE = ("Rewrite this Python function so that it does exactly the same thing but looks different: give "
                "the function and every variable new names, restructure the loops and rewrite the docstring in "
                "your own words. Reply with the new code only, in one Python code block.\n\n```python\n{code}```")


def parse_program(reply: str) -> str:
    """The program in an LLM's reply; one that does not parse is rejected (the client keeps the raw reply).
    A reply wrapped in a JSON object (endpoints in JSON mode) is read from its one text field."""
    import json

    try:
        wrapped = json.loads(reply)
        texts = [v for v in wrapped.values() if isinstance(v, str)] if isinstance(wrapped, dict) else []
        reply = texts[0] if len(texts) == 1 else reply
    except ValueError:  # not JSON: the reply as written
        pass
    code = extract_code(reply) or reply
    ast.parse(code)
    if not any(isinstance(n, ast.FunctionDef) for n in ast.walk(ast.parse(code))):
        raise ValueError("the reply has no function")
    return code


def llm_rephrasings(store, problems: list[dict], llm, *, seed: int = 0,
                    run_id: str = "contamination-devset-llm") -> tuple[list[DevRecord], dict]:
    """Each problem rephrased by the LLM (`llm`: an LLMConfig) as a held-out planted record, and counts
    (asked, parsed, unchanged). Replies that do not parse are dropped, not planted."""
    from assay.core.llm import LLMClient, Request

    rng = random.Random(seed)
    requests = [Request(key=p["task_id"], messages=[{"role": "user", "content": LLM_REPHRASE.format(
        code=p["prompt"] + p["canonical_solution"])}], parse=parse_program) for p in problems]
    results = {r.key: r for r in LLMClient(llm).run_batch(run_id, requests, store)}
    records, unchanged = [], 0
    for p in problems:
        res = results.get(p["task_id"])
        if res is None or not res.ok:
            continue
        code = res.value
        unchanged += code.strip() == (p["prompt"] + p["canonical_solution"]).strip()
        name = next(n.name for n in ast.walk(ast.parse(code)) if isinstance(n, ast.FunctionDef))
        desc = _swap_words(_doc_description(ast.get_docstring(ast.parse(p["prompt"]).body[-1]) or ""),
                           _DESC_SYNONYMS, rng, 0.9)
        records.append(DevRecord(rng.choice(_ASK).format(name=name, desc=desc), "", f"```python\n{code}\n```",
                                 "human-eval", p["task_id"], "llm-rephrased", "held-out"))
    return records, {"asked": len(problems), "parsed": len(records), "unchanged": unchanged}
