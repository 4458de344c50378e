"""Where a workspace's files live: a local folder or an object store (any fsspec URL: s3://, gs://, ...).

The store writes every file once, whole, under a name nobody else writes different bytes to, so the
two kinds of storage need only this much told apart: how a write is made atomic, that object stores
have no folders, and that their listings must not be cached.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import fsspec
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from .errors import AssayError


def open_filesystem(url: str) -> tuple[AbstractFileSystem, str, bool]:
    """The filesystem of `url`, the root path on it, and whether it is a local disk."""
    # an object-store filesystem (s3fs, gcsfs, ...) caches directory listings, in an instance that
    # fsspec shares across the process: a cached listing would hide objects that another process
    # (a concurrent committer, a background job) wrote since, so remote workspaces list afresh
    remote = fsspec.utils.get_protocol(url) not in ("file", "local")
    fs, root = fsspec.core.url_to_fs(url, **({"use_listings_cache": False} if remote else {}))
    local = isinstance(fs, LocalFileSystem)
    if local:
        return fs, str(Path(root).resolve()), True
    _check_bucket(fs, root, url)
    return fs, root, False


def _check_bucket(fs: AbstractFileSystem, root: str, url: str) -> None:
    """Fail on open, naming the bucket, rather than at the first write of an import or audit."""
    bucket = root.split("/", 1)[0]
    try:
        fs.info(bucket)  # not fs.exists: s3fs's swallows every error, which would call a dead endpoint "no bucket"
    except FileNotFoundError:
        raise AssayError(f"workspace {url}: bucket {bucket!r} does not exist (create it first; Assay does not "
                         "create buckets)") from None
    except PermissionError as exc:  # S3's 403: a key the store does not know, or no right to the bucket
        raise AssayError(f"workspace {url}: no access to bucket {bucket!r} ({exc}): check the credentials "
                         "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and the bucket's "
                         "policy") from None
    except Exception as exc:  # no endpoint, no credentials, no permission: whatever the backend raises
        raise AssayError(f"workspace {url}: cannot reach bucket {bucket!r}: {exc}") from exc


def makedirs(fs: AbstractFileSystem, local: bool, path: str) -> None:
    """A folder for files to come. Only a local disk has folders: on an object store a key's prefix
    needs no creating, and s3fs's makedirs would create a missing bucket instead of failing."""
    if local:
        fs.makedirs(path, exist_ok=True)


def listdir(fs: AbstractFileSystem, path: str) -> list[str]:
    """The paths directly inside `path`; none when it does not exist (an object store has no empty
    folders: a prefix nothing was written under yet is not found)."""
    try:
        return fs.ls(path, detail=False)
    except FileNotFoundError:
        return []


def write_atomic(fs: AbstractFileSystem, local: bool, path: str, data: bytes) -> None:
    """Write `data` to `path` so that readers see no file or the whole file, never a prefix of it."""
    if not local:
        # no rename on an object store, and none needed: a PUT publishes the whole object or nothing
        # (s3fs sends objects over 100 MB as a multipart upload, which too appears only once complete),
        # so a killed writer leaves no partial object and no temp name behind
        try:
            fs.pipe_file(path, data)
        except PermissionError as exc:  # a key that may read the bucket but not write it
            bucket = path.split("/", 1)[0]
            raise AssayError(f"cannot write {fs.unstrip_protocol(path)}: no write access to bucket {bucket!r} "
                             f"({exc}); nothing was committed") from None
        return
    # write a temp file beside the target, flush it to disk, then rename over
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    # and the directory entry, so the rename itself survives a power loss
    dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
