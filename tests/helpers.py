"""Helpers shared by the tests (importable as `helpers`: pytest puts tests/ on the path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


class Cli:
    """Runs the real `assay` console entry point in a subprocess against one workspace."""

    def __init__(self, workspace: Path):
        self.workspace = workspace

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "ASSAY_WORKSPACE": str(self.workspace)}
        proc = subprocess.run([sys.executable, "-m", "assay.app.cli", *args], capture_output=True, text=True,
                              env=env, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"assay {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> dict:
        proc = self(*args, "--json")
        return json.loads(proc.stdout)


APP_UI = Path(__file__).resolve().parents[1] / "app" / "ui"


def run_page(page: str, timeout: float = 120):
    """Run one Streamlit page script of app/ui/ under AppTest; fail on any exception it raised."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP_UI / page), default_timeout=timeout).run()
    assert not at.exception, at.exception
    return at
