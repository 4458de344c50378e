"""Shared fixtures. Real data is read from ../shared/data beside the checkout, never copied."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import Cli

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    # A missing data folder is a broken set-up, not a reason to skip: fail loudly.
    assert SHARED_DATA.is_dir(), f"test data missing: expected {SHARED_DATA} (../shared/data beside the checkout)"
    return SHARED_DATA


@pytest.fixture
def workspace(tmp_path) -> Path:
    return tmp_path / "ws"


@pytest.fixture
def store(workspace):
    from assay.core.store import Store

    return Store(workspace)


@pytest.fixture
def cli(workspace) -> Cli:
    return Cli(workspace)
