"""Text metrics shared by the generators and the trainer: word tokens and ROUGE-L.

ROUGE-L is the LCS F-measure over the `rouge-score` package's default tokenisation (lowercase,
alphanumeric runs), written out rather than taken from `rouge-score`: it is twenty lines, and that
package would bring nltk and absl along for them. Self-Instruct's pool filter and Evol-Instruct's
elimination rules compare instructions with it; the trainer scores greedy answers with it.
"""

from __future__ import annotations

import re


def tokens(text: str) -> list[str]:
    """rouge-score's default tokenisation: lowercase, runs of [a-z0-9]."""
    return re.findall(r"[a-z0-9]+", text.lower())


def _lcs(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(a: str | list[str], b: str | list[str]) -> float:
    """ROUGE-L F-measure of two texts (symmetric, in [0, 1])."""
    ta = tokens(a) if isinstance(a, str) else a
    tb = tokens(b) if isinstance(b, str) else b
    if not ta or not tb:
        return 0.0
    lcs = _lcs(ta, tb)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(tb), lcs / len(ta)
    return 2 * p * r / (p + r)
