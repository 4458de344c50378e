"""Fixtures for the app's tests: a real `assay app` server on 127.0.0.1 against a temp workspace,
a real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, screenshots as artefacts,
and clean-up of background jobs a test started (they run in their own process groups)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Streamlit renders asynchronously; every wait in the browser tests is on a locator, with this bound
UI_TIMEOUT_MS = 30_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """`assay -w WORKSPACE app --port P` in a subprocess, until stop()."""

    def __init__(self, workspace: Path, log: Path, extra: tuple[str, ...] = ()):
        self.workspace, self.port = workspace, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "assay.app.cli", "-w", str(workspace), "app", "--port", str(self.port), *extra],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "ASSAY_WORKSPACE": str(workspace)})
        self.log_path = log

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"assay app exited {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"assay app did not answer within {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own group: streamlit and anything it started
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def cancel_jobs(workspace: Path) -> None:
    """Stop every background job still active in `workspace` (jobs outlive the app by design)."""
    from assay.core import jobs
    from assay.core.store import Store

    if not (workspace / "catalog.sqlite").exists():
        return
    store = Store(workspace)
    for job in jobs.list_jobs(store, limit=1000):
        if not job.finished:
            jobs.cancel(store, job.id)


def start_app(tmp_path_factory, name: str, *extra: str) -> AppServer:
    base = tmp_path_factory.mktemp(name)
    server = AppServer(base / "ws", base / "app.log", extra)
    server.wait_ready()
    return server


@pytest.fixture
def app_server(tmp_path_factory):
    """A fresh `assay app` on an empty workspace."""
    server = start_app(tmp_path_factory, "app")
    yield server
    server.stop()
    cancel_jobs(server.workspace)


@pytest.fixture
def small_upload_app_server(tmp_path_factory):
    """`assay app --max-upload-mb 1` on an empty workspace."""
    server = start_app(tmp_path_factory, "app-small", "--max-upload-mb", "1")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared_app_server(tmp_path_factory):
    """One `assay app` for a module's tests (each test uses its own dataset names)."""
    server = start_app(tmp_path_factory, "app-shared")
    yield server
    server.stop()
    cancel_jobs(server.workspace)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: install Debian's chromium package (scripts/setup.sh)"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    p = context.new_page()
    p.set_default_timeout(UI_TIMEOUT_MS)
    yield p
    context.close()


def save_shot(page, name: str) -> Path:
    """Save a full-page screenshot under tests/artifacts/ (kept by CI as a test artefact)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def shot():
    """`shot(page, name)`: save a screenshot under tests/artifacts/."""
    return save_shot


@pytest.fixture
def app_workspace(tmp_path, monkeypatch):
    """An empty workspace that AppTest scripts use (ASSAY_WORKSPACE); its jobs are stopped after."""
    workspace = tmp_path / "ws"
    monkeypatch.setenv("ASSAY_WORKSPACE", str(workspace))
    yield workspace
    cancel_jobs(workspace)
