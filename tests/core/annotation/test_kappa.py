"""Agreement maths."""

from __future__ import annotations

import numpy as np
import pytest

from assay.core import annotation as A


def test_fleiss_kappa_matches_the_textbook_example():
    # Fleiss (1971) as tabulated on Wikipedia's "Fleiss' kappa": 10 subjects, 14 raters, 5 categories
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                      [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert A.fleiss_kappa(table) == pytest.approx(0.2099, abs=1e-4)
    assert A.fleiss_kappa(np.array([[3, 0], [3, 0]])) is None  # one category only: undefined
