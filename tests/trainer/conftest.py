"""One workspace for all trainer tests (session-scoped: SmolLM2's tokenizer is converted from the
GGUF once, about 15 s, which itself tests the conversion)."""

from __future__ import annotations

import pytest
from helpers import SHARED_DATA

from assay.core.store import Store
from assay.pipelines.importer import import_source

SHARED = SHARED_DATA


@pytest.fixture(scope="session")
def ws(tmp_path_factory):
    """CodeAlpaca (short records) as `small`, a filtered child `b`, and GSM8K as the fixed held-out
    reference set. (The model cache is the session's, from tests/conftest.py.)"""
    assert SHARED.is_dir(), f"test data missing: {SHARED}"
    store = Store(tmp_path_factory.mktemp("ws"))
    import_source(store, str(SHARED / "instructions/codealpaca_new.json"), "ca")
    store.filter("ca", "length(output) < 300", name="small")
    store.filter("small", "length(output) < 120", name="b")
    import_source(store, str(SHARED / "benchmarks/gsm8k_test.jsonl"), "gsm8k")
    return store
