"""Shared fixtures. Real data is read from ../shared/data beside the checkout, never copied."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import pytest
from helpers import SHARED_DATA, Cli, Workspace

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


S3_BUCKET = "assay-test"


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API on loopback (moto's standalone server, in a thread of this process), once per run.
    The AWS variables go into os.environ, so child processes a test starts reach it too: botocore
    takes the endpoint from AWS_ENDPOINT_URL, the same way a user points Assay at MinIO or R2."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # else one access-log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            mp.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True).mkdir(S3_BUCKET)
        yield endpoint
    server.stop()


@pytest.fixture
def s3_workspace(s3_server, tmp_path, monkeypatch) -> Workspace:
    """A fresh `s3://` workspace (its own prefix in the session's bucket) with a local catalog file."""
    catalog = tmp_path / "catalog.sqlite"
    monkeypatch.setenv("ASSAY_CATALOG", str(catalog))
    return Workspace(f"s3://{S3_BUCKET}/ws-{uuid.uuid4().hex[:12]}", catalog)


@pytest.fixture(params=["local", "s3"])
def any_workspace(request, tmp_path) -> Workspace:
    """The store's storage-level tests run on both: a local folder and a prefix on the S3 server."""
    if request.param == "s3":
        return request.getfixturevalue("s3_workspace")
    return Workspace(str(tmp_path / "ws"), tmp_path / "ws" / "catalog.sqlite")
