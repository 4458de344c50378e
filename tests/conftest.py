"""Shared fixtures. Real data is read from ../shared/data beside the checkout, never copied."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import SHARED_DATA, Cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """One model cache for the whole run (subprocesses inherit it): SmolLM2's GGUF is dequantised
    and saved as safetensors once, not once per workspace (~15-45 s each on 2 cores)."""
    if os.environ.get("ASSAY_MODEL_CACHE"):
        yield os.environ["ASSAY_MODEL_CACHE"]
        return
    path = str(tmp_path_factory.mktemp("models"))
    os.environ["ASSAY_MODEL_CACHE"] = path
    yield path
    os.environ.pop("ASSAY_MODEL_CACHE", None)


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


@pytest.fixture
def hub_offline(monkeypatch):
    """No Hub here. Say so up front: `datasets` reads HF_HUB_OFFLINE once, at import, and without it
    a Hub lookup retries for ~20 s before it fails with the same error."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
