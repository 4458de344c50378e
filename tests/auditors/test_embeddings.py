"""Embedding backends on real data (50 CodeAlpaca records, the packaged all-MiniLM-L6-v2): each
backend's vectors against torch float32, the backend recorded in the audit summary, the cache keyed
by backend, and clear errors for a bad or unavailable backend; on 200 records, the `embed` duplicate decisions
of onnx and openvino against torch's."""

import importlib.util

import numpy as np
import polars as pl
import pytest
from auditor_helpers import codealpaca

from assay.auditors import embedding_backends
from assay.auditors.base import AuditContext
from assay.auditors.embeddings import embed_records
from assay.auditors.runner import make_auditor, run_audit
from assay.auditors.semantic_dups import EmbedConfig
from assay.core.errors import AssayError
from assay.core.store import Store
from assay.pipelines.importer import import_source

N = 50
_MODULE: dict = {}


@pytest.fixture
def texts(shared_data, tmp_path_factory):
    """One workspace for the module (the ONNX export is made once) and 50 real records."""
    if not _MODULE:
        rows = codealpaca(shared_data, N)
        records = pl.DataFrame({"id": [f"r{i:03d}" for i in range(N)],
                                "text": [r["instruction"] + "\n\n" + r["input"] + "\n\n" + r["output"] for r in rows]})
        _MODULE.update(store=Store(tmp_path_factory.mktemp("emb") / "ws"), records=records, torch={})
        _MODULE["torch"] = embed_records(AuditContext(_MODULE["store"], ""), records, backend="torch")
    return _MODULE["store"], _MODULE["records"], _MODULE["torch"]


@pytest.mark.parametrize("backend,floor", [("onnx", 0.9999), ("openvino", 0.999), ("onnx-int8", 0.99)])
def test_backend_vectors_match_torch(texts, backend, floor):
    store, records, reference = texts
    stats: dict = {}
    vectors = embed_records(AuditContext(store, ""), records, backend=backend, stats=stats)
    assert stats["computed"] == N and stats["backend"].startswith(backend) and stats["device"] == "cpu"
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = (vectors * reference).sum(axis=1)
    assert cosine.mean() >= floor and cosine.min() >= 0.98
    # neighbours agree: each record's most similar other record is the same under both backends
    def nearest(x):
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        return sims.argmax(axis=1)
    assert (nearest(vectors) == nearest(reference)).mean() >= 0.9


def test_cache_is_keyed_by_backend(texts):
    store, records, _ = texts
    ctx = AuditContext(store, "")
    first, again, other = {}, {}, {}
    embed_records(ctx, records, backend="onnx", stats=first)
    embed_records(ctx, records, backend="onnx", stats=again)
    embed_records(ctx, records.head(10), backend="onnx-int8", stats=other)
    assert again["computed"] == 0 and again["reused"] == N  # the same backend hits
    assert other["backend"] == "onnx-int8" and other["reused"] + other["computed"] == 10
    torch_again: dict = {}
    embed_records(ctx, records, backend="torch", stats=torch_again)
    assert torch_again["computed"] == 0  # torch's own vectors, not another backend's


def test_fresh_backend_reencodes(shared_data, tmp_path):
    store = Store(tmp_path / "ws")
    rows = codealpaca(shared_data, 8)
    records = pl.DataFrame({"id": [f"x{i}" for i in range(8)], "text": [r["instruction"] for r in rows]})
    ctx = AuditContext(store, "")
    a, b = {}, {}
    embed_records(ctx, records, backend="torch", stats=a)
    embed_records(ctx, records, backend="onnx", stats=b)
    assert a["computed"] == 8 and b["computed"] == 8 and b["reused"] == 0


def test_summary_records_backend_device_and_truncation(shared_data, tmp_path):
    from helpers import write_jsonl

    store = Store(tmp_path / "ws")
    source = write_jsonl(tmp_path / "rows.jsonl", codealpaca(shared_data, 12))
    version = import_source(store, str(source), "code")
    result = run_audit(store, version.id, [make_auditor("embed", {"backend": "onnx"}),
                                           make_auditor("diversity", {"backend": "auto"})])
    emb = result["auditors"]["embed"]["embedding"]
    assert (emb["backend"], emb["device"], emb["max_seq_length"]) == ("onnx", "cpu", 256)
    auto = result["auditors"]["diversity"]["embedding"]
    expected = "torch" if embedding_backends.gpu_present() else embedding_backends.backend_tag("openvino")
    assert auto["backend"] == expected and auto["computed"] == 12  # another backend: encoded again


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(AssayError, match=r"embed: backend must be one of auto, torch, onnx.*'tensorrt'"):
        EmbedConfig(backend="tensorrt").validate()
    with pytest.raises(AssayError, match="contamination: backend must be"):
        make_auditor("contamination", {"backend": "gpu"})


def test_backend_without_its_package_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(embedding_backends.importlib.util, "find_spec",
                        lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(AssayError, match=r"backend 'openvino' needs the openvino package.*pip install openvino"):
        embedding_backends.resolve_backend("openvino")
    # auto does not fail: without OpenVINO a CPU runs torch
    assert embedding_backends.resolve_backend("auto") in ("torch",)


def test_backend_that_cannot_load_falls_back_to_torch_with_a_warning(shared_data, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(embedding_backends, "export_onnx", broken)
    from assay.auditors import embeddings

    embeddings._encoder.cache_clear()
    store = Store(tmp_path / "ws")
    records = pl.DataFrame({"id": ["a", "b"], "text": ["sort a list in Python", "reverse a string"]})
    stats: dict = {}
    with pytest.warns(UserWarning, match=r"cannot run on backend onnx \(exporter exploded\); using torch"):
        embed_records(AuditContext(store, ""), records, backend="onnx", stats=stats)
    embeddings._encoder.cache_clear()  # the fallback encoder must not serve later tests
    assert stats["backend"] == "torch" and stats["fallback_from"] == "onnx" and stats["computed"] == 2


_DECISIONS: dict = {}


@pytest.fixture
def duplicate_decisions(shared_data, tmp_path_factory):
    """200 real CodeAlpaca records imported once; the `embed` auditor (default threshold) run on them
    with each backend; per backend its `embed_duplicate` flags and its vectors (from the cache)."""
    if not _DECISIONS:
        _DECISIONS.update(_decisions(shared_data, tmp_path_factory.mktemp("dups")))
    return _DECISIONS


def _decisions(shared_data, tmp) -> dict:
    from helpers import write_jsonl

    from assay.core.audits import audit_columns
    from assay.core.records import with_text

    store = Store(tmp / "ws")
    version = import_source(store, str(write_jsonl(tmp / "rows.jsonl", codealpaca(shared_data, 200))), "code")
    records = with_text(store.read(version.id))
    out = {}
    for backend in ("torch", "onnx", "openvino"):
        run_audit(store, version.id, [make_auditor("embed", {"backend": backend})], show_progress=False)
        vectors = embed_records(AuditContext(store, version.id), records, backend=backend)  # cache hits
        out[backend] = (audit_columns(store, version.id)["embed_duplicate"].to_numpy(), vectors)
    return out


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_backend_duplicate_decisions_match_torch(duplicate_decisions, backend):
    flags, vectors = duplicate_decisions[backend]
    torch_flags, torch_vectors = duplicate_decisions["torch"]
    assert torch_flags.sum() > 0  # the records hold near-duplicates, so the comparison decides something
    cosine = (vectors * torch_vectors).sum(axis=1)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.98
    assert (flags == torch_flags).all(), np.flatnonzero(flags != torch_flags)
