"""A Ray cluster that goes away in the middle of an audit: a real head started with `ray start`,
its processes killed while the audit's tasks run. The driver fails within seconds with an error
that names the cluster, and the workspace is unchanged."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from helpers import imported_version

from assay.core.audits import latest_audits
from assay.core.store import Store

RAY = str(Path(sys.executable).with_name("ray"))

# the driver: a slow exact auditor (its map sleeps), so the tasks are still running when the head dies
DRIVER = textwrap.dedent("""
    import sys, time
    from assay.auditors.exact import ExactDuplicates
    from assay.auditors.runner import run_audit
    from assay.core.errors import AssayError
    from assay.core.store import Store

    class SlowExact(ExactDuplicates):
        marker = sys.argv[4]  # read here: the class travels to the workers by value

        def map(self, batch):
            open(self.marker, "a").close()  # on the worker: a map has started
            time.sleep(4)
            return super().map(batch)

    print("auditing", flush=True)
    try:
        run_audit(Store(sys.argv[1]), sys.argv[2], [SlowExact()], engine="ray", ray_address=sys.argv[3],
                  show_progress=False)
    except AssayError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    print("committed", flush=True)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_cluster(temp_dir: str) -> int:
    """Kill every process of the head started under `temp_dir` (GCS, raylet, ...); how many."""
    killed = 0
    for proc in psutil.process_iter(["cmdline"]):
        if temp_dir in " ".join(proc.info["cmdline"] or []):
            try:
                proc.kill()
                killed += 1
            except psutil.NoSuchProcess:
                pass
    return killed


@pytest.fixture
def ray_head():
    """A Ray head of one CPU, started as a user starts one; its own short temp dir (socket paths)."""
    temp_dir = tempfile.mkdtemp(prefix="rayg", dir="/tmp")
    port = _free_port()
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                    f"--temp-dir={temp_dir}", "--disable-usage-stats"], check=True, capture_output=True, timeout=120)
    yield f"127.0.0.1:{port}", temp_dir
    _kill_cluster(temp_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_cluster_that_goes_away_mid_audit_is_a_clear_error_and_commits_nothing(ray_head, tmp_path):
    address, temp_dir = ray_head
    import assay.core.store as store_module

    store = Store(tmp_path / "ws")
    rows = [{"instruction": f"Task {i % 500}", "input": "", "output": "ok"} for i in range(3000)]
    old = store_module.SEGMENT_ROWS
    store_module.SEGMENT_ROWS = 1000  # three parts: three tasks of 4 s each on one CPU
    try:
        version = imported_version(store, "t", rows)
    finally:
        store_module.SEGMENT_ROWS = old
    script = tmp_path / "driver.py"
    script.write_text(DRIVER, encoding="utf-8")
    started = tmp_path / "map-started"
    driver = subprocess.Popen([sys.executable, str(script), str(store.root), version.id, address, str(started)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert driver.stdout.readline().strip() == "auditing"
    deadline = time.perf_counter() + 90
    while not started.exists():  # connected, and the first task sleeping in its map
        assert driver.poll() is None and time.perf_counter() < deadline, driver.communicate()
        time.sleep(0.2)
    assert _kill_cluster(temp_dir) > 0
    killed_at = time.perf_counter()
    try:
        out, err = driver.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        driver.kill()
        raise
    seconds = time.perf_counter() - killed_at
    assert driver.returncode == 1, (out, err)
    assert "committed" not in out
    assert "error: the Ray cluster at " in err and f":{address.rsplit(':', 1)[1]} went away" in err, err
    assert "went away while auditing t@1; nothing was committed" in err, err
    assert seconds < 30, seconds  # the probe, not Ray's minute of GCS retries
    assert latest_audits(store, version) == []
