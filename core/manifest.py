"""What a version is: its manifest (parents, operation, parameters, code version, counts, content
hash, parts) and the hashing that names versions and objects. No I/O here but `git rev-parse`, so
anything that needs a manifest's shape can import it without the store."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from .errors import AssayError

MANIFEST_FORMAT = 1


def hash_bytes(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def pack_bits(mask: np.ndarray) -> bytes:
    return zlib.compress(np.packbits(mask.astype(bool)).tobytes(), 6)


def unpack_bits(blob: bytes, length: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(zlib.decompress(blob), dtype=np.uint8), count=length).astype(bool)


@lru_cache(maxsize=1)
def code_version() -> str:
    """The package version plus the git commit it runs from, when it runs from a checkout."""
    from assay import __version__

    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", ""
    return f"{__version__}+g{sha}{'.dirty' if dirty else ''}" if sha else __version__


class Part(BaseModel):
    segment: str = Field(description="hash of the segment file")
    rows: int = Field(description="rows in the segment")
    selection: str | None = Field(None, description="hash of the bitmap of kept rows; null keeps all")
    kept: int = Field(description="rows this part contributes to the version")


class Manifest(BaseModel):
    """What a version is. Immutable: its id is the hash of everything else in it."""

    id: str = ""
    format: int = MANIFEST_FORMAT
    dataset: str
    number: int
    parents: list[str]
    operation: str
    params: dict[str, Any]
    code_version: str
    created_at: str
    records: int
    content_hash: str = Field(description="hash of the version's record ids, in order")
    parts: list[Part]

    def body_hash(self) -> str:
        return hash_bytes(canonical_json(self.model_dump(exclude={"id"})))

    @property
    def ref(self) -> str:
        return f"{self.dataset}@{self.number}"

    def summary(self) -> dict[str, Any]:
        return {"version": self.id, "ref": self.ref, "dataset": self.dataset, "number": self.number,
                "operation": self.operation, "records": self.records, "parents": self.parents,
                "created_at": self.created_at}


_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def check_dataset_name(name: str) -> str:
    if not _DATASET_NAME.match(name or ""):
        raise AssayError(f"invalid dataset name {name!r}: use letters, digits, '_', '-', '.' "
                         "(up to 128 characters, starting with a letter or digit)")
    return name
