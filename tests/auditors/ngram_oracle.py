"""The tests' oracle for the contamination n-gram index: a slower engine with the same interface as
`assay.auditors.ngram_index.NumbaEngine`, built from other parts (Polars tokens with the Unicode
regexes, numpy n-gram hashes from Polars' token hashes, a binary search in the sorted benchmark
hashes), so the tests and bench/contamination_bench.py can check the compiled engine against it;
and the plain Python reference both are held to (a set of n-grams, as GPT-3 and lm-evaluation-harness)."""

from __future__ import annotations

import sys
import unicodedata
from functools import lru_cache

import numpy as np
import polars as pl

from assay.auditors.ngram_index import MAX_NGRAM, BenchmarkIndex, tokenize


class NumpyEngine:
    """Polars tokens, numpy n-gram hashes: sum_j hash(token_j) * M_j mod 2^64 over the n tokens."""

    name = "numpy"
    MULTIPLIERS = (np.random.default_rng(0x5EED_C0DE).integers(1, 2**62, size=MAX_NGRAM, dtype=np.uint64)
                   * np.uint64(2) + np.uint64(1))

    def grams(self, texts: pl.Series, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(hash, text index) of every n-gram of every text; texts shorter than n have none."""
        tokens = tokenize(texts)
        lengths = tokens.list.len().fill_null(0).to_numpy().astype(np.int64)
        flat = tokens.explode().drop_nulls()
        th = flat.hash(seed=0x1A55A7).to_numpy().astype(np.uint64, copy=False) if flat.len() else np.zeros(0, np.uint64)
        windows = th.size - n + 1
        if windows <= 0:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        grams = th[:windows] * self.MULTIPLIERS[0]
        tmp = np.empty_like(grams)
        for j in range(1, n):
            np.multiply(th[j:j + windows], self.MULTIPLIERS[j], out=tmp)
            grams += tmp  # wraps mod 2^64
        owner = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
        valid = owner[:windows] == owner[n - 1:]  # the window does not cross into the next text
        return grams[valid], owner[:windows][valid]

    def prepare(self, index: BenchmarkIndex) -> None:
        pass

    def hits(self, texts: pl.Series, index: BenchmarkIndex) -> tuple[np.ndarray, np.ndarray]:
        """(text index, hash) of the n-grams whose hash is a benchmark n-gram hash."""
        grams, owner = self.grams(texts, index.n)
        hit = index.contains(grams)
        return owner[hit], grams[hit]



@lru_cache(maxsize=1)
def _delete_table() -> dict[int, None]:
    return {c: None for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c))[0] in "PS"}


def plain_ngrams(text: str, n: int) -> set[str]:
    tokens = text.lower().translate(_delete_table()).split()
    return {" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def plain_scan(texts: list[str], bench_texts: list[str], n: int) -> list[int]:
    bench = set().union(*(plain_ngrams(t, n) for t in bench_texts))
    return [len(plain_ngrams(t, n) & bench) for t in texts]




def plain_tokens(text: str) -> list[str]:
    return text.lower().translate(_delete_table()).split()
