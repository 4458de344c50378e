"""Code canonicalisation: renames, comments, docstrings, literals and loop forms do not change the
canonical form; a different program does; code that is not Python takes the counted fallback."""

import json

import polars as pl
from auditor_helpers import human_eval

from assay.auditors.code_canon import canonicalise, extract_code, may_hold_code


def shingles(tokens, n=4):
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a, b):
    x, y = shingles(canonicalise(a).tokens), shingles(canonicalise(b).tokens)
    return len(x & y) / len(x | y)


def test_names_comments_docstrings_and_literals_do_not_change_the_canonical_form():
    a = '''def add_numbers(first, second):
    """Add two numbers."""
    # sum them
    total = first + second * 2
    return total, "done"
'''
    b = '''def plus(a,   b):
    # a different comment, no docstring
    s = a + b * 7  # trailing comment
    return s, 'finished'
'''
    ca, cb = canonicalise(a), canonicalise(b)
    assert not ca.fallback and not cb.fallback
    assert ca.tokens == cb.tokens
    # attribute names and builtins are the API, not chosen names: they stay
    assert "append" in canonicalise("def f(x):\n    r = []\n    r.append(len(x))\n").tokens
    assert "len" in canonicalise("def f(x):\n    return len(x)\n").tokens


def test_a_different_program_has_a_different_form():
    a = "def f(x, y):\n    return x + y\n"
    b = "def f(x, y):\n    return x * y - 1\n"
    assert canonicalise(a).tokens != canonicalise(b).tokens


def test_for_and_while_forms_of_a_loop_canonicalise_alike():
    loop_for = '''def total(values):
    acc = 0
    for i in range(len(values)):
        acc += values[i]
    return acc
'''
    loop_while = '''def sum_up(items):
    s = 0
    k = 0
    while k < len(items):
        s += items[k]
        k += 1
    return s
'''
    assert jaccard(loop_for, loop_while) >= 0.9
    # so does a comprehension and the loop it unrolls to
    comp = "def f(xs):\n    n = len(xs)\n    return [x * 2 for x in xs if x > n]\n"
    loop = ("def f(xs):\n    n = len(xs)\n    out = []\n    for x in xs:\n        if x > n:\n"
            "            out.append(x * 2)\n    return out\n")
    unrelated = "def g(s):\n    return s.upper().split(',')\n"
    assert jaccard(comp, loop) >= 0.9 > 0.2 > jaccard(comp, unrelated)


def test_non_python_code_takes_the_token_fallback():
    c = "int main() {\n  int width = 5; // the width\n  /* area */ return width * 8;\n}"
    other = "int main() {\n  int w = 9;\n  return w * 3;\n}"
    canon = canonicalise(c)
    assert canon.fallback and canon.tokens == canonicalise(other).tokens
    assert "width" not in canon.tokens and "int" in canon.tokens and "N" in canon.tokens
    assert canonicalise("def broken(:\n  pass").fallback  # Python that does not parse
    assert canonicalise("").tokens == [] and not canonicalise("  ").fallback


def test_every_human_eval_solution_canonicalises_without_fallback():
    for p in human_eval():
        canon = canonicalise(p["prompt"] + p["canonical_solution"])
        assert not canon.fallback and len(canon.tokens) > 5, p["task_id"]
        assert all(t.replace("_", "").isalnum() for t in canon.tokens)  # word tokens: the shingler's words


def test_extract_code_takes_fences_else_the_run_of_code_lines():
    fenced = "Here you go:\n\n```python\ndef f(x):\n    return x\n```\nand\n```\nprint(1)\n```"
    assert extract_code(fenced) == "def f(x):\n    return x\nprint(1)"
    bare = ("Write a function that adds two numbers.\n\ndef add(a, b):\n    c = a + b\n\n    return c\n\n"
            "It returns the sum.")
    assert extract_code(bare) == "def add(a, b):\n    c = a + b\n\n    return c"
    assert extract_code("Tell me a story about a cat. It was sunny.") == ""
    assert extract_code(None) == ""


def test_the_rarer_statements_canonicalise_without_fallback():
    """async loops, walrus, for-else, loops in except/finally/match, nested and dict/set comprehensions,
    decorators and class bodies: parsed, rewritten where safe, never a crash or a fallback."""
    sources = [
        "async def f(xs):\n    async for x in xs:\n        print(x)\n    async with a as b:\n"
        "        for i in range(3):\n            yield i\n",
        "def g(d):\n    if (n := len(d)) > 2:\n        return [[y for y in x] for x in d if x]\n"
        "    for k, v in d.items():\n        pass\n    else:\n        return 1\n    try:\n        for q in d:\n"
        "            continue\n    except ValueError as e:\n        for z in d:\n            print(z)\n"
        "    match d:\n        case {'a': 1}:\n            for w in d: print(w)\n        case _:\n            pass\n",
        "@decorator(1)\nclass A(B):\n    '''doc'''\n    x: int = 3\n    def m(self, *a, **k):\n"
        "        r = {i: i for i in range(10)}\n        return (i for i in {i for i in r})\n",
    ]
    for source in sources:
        canon = canonicalise(source)
        assert not canon.fallback and "S" not in canon.tokens[:3] and len(canon.tokens) > 20
    # the for-else and the loop with `continue` keep their `for` (a while form would change them)
    assert canonicalise(sources[1]).tokens.count("for") >= 2


def test_may_hold_code_never_hides_code_that_extract_code_finds(shared_data):
    """The vectorised pre-check may pass prose through, but must never clear a text in which
    extract_code finds code: checked on real instruction data (code and prose) and on lines split
    by separators and characters where Python's and Rust's regex classes differ."""
    data = shared_data / "instructions"
    rows = json.loads((data / "codealpaca_new.json").read_text())
    texts = ["\n\n".join(r[k] for k in ("instruction", "input", "output") if r[k]) for r in rows]
    for name in ("self_instruct_seed_tasks.jsonl", "self_instruct_user_oriented.jsonl"):
        for line in (data / name).read_text().splitlines():
            texts.append(json.dumps(json.loads(line)))
    texts += ["x½ = 1\ny = 2", "note\u2028def f(x):\u2028    return x", "\x1fdef f():\n\x1f    return 1",
              "return\u0301 1\nreturn 2", "plain prose only.", None, ""]
    maybe = may_hold_code(pl.Series(texts, dtype=pl.String)).to_list()
    with_code = [bool(extract_code(t)) for t in texts]
    assert sum(with_code) > 1000  # the data does hold code
    assert not [t for t, m, c in zip(texts, maybe, with_code) if c and not m]
    assert sum(maybe) < len(texts)  # and the pre-check clears some prose
