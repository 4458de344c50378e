"""Fixtures of the annotation tests: a workspace's team of one admin and two annotators."""

from __future__ import annotations

import pytest
from annotation_helpers import PASSWORD

from assay.core import annotation as A


@pytest.fixture
def team(store):
    boss = A.add_user(store, A.OPERATOR, "boss", PASSWORD, "admin")
    ann1 = A.add_user(store, boss, "ann1", PASSWORD)
    ann2 = A.add_user(store, boss, "ann2", PASSWORD)
    return boss, ann1, ann2
