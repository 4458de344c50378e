"""Credentials and permissions on object storage, against a real S3 API that enforces them: moto's
standalone server in its own process with authentication on (INITIAL_NO_AUTH_ACTION_COUNT: the first
requests set up a bucket and a read-only IAM user, every later one is checked against IAM)."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import Cli, write_jsonl

from assay.core.errors import AssayError
from assay.core.store import Store

BUCKET = "assay-readonly"
SETUP_ACTIONS = 4  # create_bucket, create_user, put_user_policy, create_access_key


@pytest.fixture(scope="module")
def enforcing_s3():
    """(endpoint, read-only key id, its secret): a moto server that checks every request's key."""
    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_ACTIONS)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            assert time.time() < deadline and server.poll() is None, "moto_server did not start"
            time.sleep(0.1)
    admin = {"endpoint_url": endpoint, "aws_access_key_id": "admin", "aws_secret_access_key": "admin",
             "region_name": "us-east-1"}
    boto3.client("s3", **admin).create_bucket(Bucket=BUCKET)
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": ["s3:Get*", "s3:List*", "s3:HeadBucket"],
            "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]}]}))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    yield endpoint, key["AccessKeyId"], key["SecretAccessKey"]
    server.kill()
    server.wait()


@pytest.fixture
def as_user(enforcing_s3, monkeypatch):
    """Point the AWS variables at the enforcing server with the given key (fsspec's cached S3
    filesystems are dropped, since each is bound to the credentials it was made with)."""
    import s3fs

    endpoint, _, _ = enforcing_s3

    def use(key_id: str | None, secret: str | None) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        for name, value in (("AWS_ACCESS_KEY_ID", key_id), ("AWS_SECRET_ACCESS_KEY", secret)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()

    yield use
    s3fs.S3FileSystem.clear_instance_cache()


def test_a_key_the_store_does_not_know_is_a_clear_error_naming_the_bucket(as_user, tmp_path):
    as_user("AKIANOTAREALKEY00000", "wrong-secret")
    with pytest.raises(AssayError, match=f"no access to bucket '{BUCKET}'.*check the credentials"):
        Store(f"s3://{BUCKET}/ws", str(tmp_path / "catalog.sqlite"))


def test_no_credentials_at_all_is_a_clear_error(as_user, tmp_path, monkeypatch):
    as_user(None, None)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))  # no ~/.aws to fall back on
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(AssayError, match=f"bucket '{BUCKET}'"):
        Store(f"s3://{BUCKET}/ws", str(tmp_path / "catalog.sqlite"))


def test_a_read_only_key_cannot_import_and_nothing_is_committed(as_user, enforcing_s3, tmp_path, monkeypatch):
    _, key_id, secret = enforcing_s3
    as_user(key_id, secret)
    url, catalog = f"s3://{BUCKET}/ws", tmp_path / "catalog.sqlite"
    store = Store(url, str(catalog))  # reading the bucket is allowed: it opens
    source = write_jsonl(tmp_path / "rows.jsonl", [{"instruction": "a", "output": "b"}] * 5)
    from assay.pipelines.importer import import_source

    with pytest.raises(AssayError, match=f"no write access to bucket '{BUCKET}'.*nothing was committed"):
        import_source(store, str(source), "d")
    assert store.versions() == []
    monkeypatch.setenv("ASSAY_CATALOG", str(catalog))
    proc = Cli(url)("import", str(source), "--name", "d", check=False)  # the CLI: one line, exit 1
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"no write access to bucket '{BUCKET}'" in proc.stderr
