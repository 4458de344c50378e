"""The repetition measure against a plain-Python reference of its definition, on real responses
(CodeAlpaca) and on edge cases."""

import re

import polars as pl
from auditor_helpers import codealpaca

from assay.auditors.quality import QualityConfig
from assay.auditors.quality_repetition import repetition_columns

WORD = re.compile(r"\w*[^\W\d_]\w*")  # a word with a letter (Python's spelling of \w*\p{L}\w*)


def reference(text: str, n: int, line_min_chars: int) -> tuple[float, int, int]:
    words = WORD.findall(text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    gram_dup = 1 - len(set(grams)) / len(grams) if grams else 0.0
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    line_dup = 1 - len(set(lines)) / len(lines) if len(lines) > 1 else 0.0
    long = [line for line in lines if len(line) >= line_min_chars]
    top = max((long.count(line) for line in long), default=0)
    return max(gram_dup, line_dup), len(grams), top


def test_equals_the_definition_on_real_and_edge_cases(shared_data):
    cfg = QualityConfig()
    texts = [r["output"].rstrip() for r in codealpaca(shared_data, 3000)] + [
        "", "a", "word word word word word", "x\nx\nx", "a line that is long enough to count\n" * 4,
        "1 2 3 4 5 6", "Été été été été", "one two\n\n\none two", "the cat sat " * 30]
    got = repetition_columns(pl.Series(texts), cfg.repetition_ngram, cfg.line_min_chars)
    expected = [reference(t, cfg.repetition_ngram, cfg.line_min_chars) for t in texts]
    assert got.height == len(texts)
    assert got["quality_repetition"].to_list() == [e[0] for e in expected]
    assert got["_n_grams"].to_list() == [e[1] for e in expected]
    assert got["_top_line"].to_list() == [e[2] for e in expected]
    assert max(e[0] for e in expected) > 0.5 and sum(e[2] >= 3 for e in expected) >= 1  # not all trivial
