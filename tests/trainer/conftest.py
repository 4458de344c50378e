"""One workspace for all trainer tests (session-scoped: SmolLM2's tokenizer is converted from the
GGUF once, about 15 s, which itself tests the conversion)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from assay.core.store import Store
from assay.pipelines.importer import import_source
# the tests import train_helpers (smoke/quick configs) from this folder (--import-mode=importlib
# does not put a test's folder on the path)
sys.path.insert(0, str(Path(__file__).parent))
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def ws(tmp_path_factory):
    """CodeAlpaca (short records) as `small`, a filtered child `b`, and GSM8K as the fixed held-out
    reference set. The model cache is shared by every test."""
    assert SHARED.is_dir(), f"test data missing: {SHARED}"
    old = os.environ.get("ASSAY_MODEL_CACHE")
    os.environ["ASSAY_MODEL_CACHE"] = str(tmp_path_factory.mktemp("models"))
    store = Store(tmp_path_factory.mktemp("ws"))
    import_source(store, str(SHARED / "instructions/codealpaca_new.json"), "ca")
    store.filter("ca", "length(output) < 300", name="small")
    store.filter("small", "length(output) < 120", name="b")
    import_source(store, str(SHARED / "benchmarks/gsm8k_test.jsonl"), "gsm8k")
    yield store
    if old is None:
        os.environ.pop("ASSAY_MODEL_CACHE", None)
    else:
        os.environ["ASSAY_MODEL_CACHE"] = old
