"""Helpers shared by the tests (importable as `helpers`: pytest puts tests/ on the path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Workspace:
    """A workspace for tests that run on both kinds of storage: a local folder, or an `s3://` prefix on
    the test session's S3 server (its catalog a local file, named by ASSAY_CATALOG for child processes)."""

    url: str
    catalog: Path  # the SQLite catalog file

    @property
    def remote(self) -> bool:
        return "://" in self.url

    def store(self):
        from assay.core.store import Store

        return Store(self.url, str(self.catalog))

    def names(self, sub: str) -> set[str]:
        """The names of the files directly under `sub` (e.g. "manifests"), as the storage lists them."""
        store = self.store()
        return {p.rsplit("/", 1)[-1] for p in store.listdir(store.path(sub))}


# ../shared/data beside the checkout: the real data every test reads where it is, never copied
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def imported_version(store, name: str, rows: list[dict[str, Any]], config=None):
    """A version of `rows` (objects as a JSON Lines file holds them) made by the real importer, for
    tests where the file itself does not matter (its path, a temp file, is the records' source)."""
    from assay.pipelines.importer import import_source

    with tempfile.TemporaryDirectory() as tmp:
        return import_source(store, str(write_jsonl(Path(tmp) / f"{name}.jsonl", rows)), name, config)


def written_version(store, name: str, rows: list[dict[str, Any]], params: dict[str, Any] | None = None,
                    **writer_options):
    """A version of `rows` (Records, or dicts of Record fields: instruction, output, metadata, ...)
    written straight by the store's VersionWriter: for the core tests, which must not depend on the
    importer."""
    from assay.core.records import Record, rows_to_table
    from assay.core.store import VersionWriter

    with VersionWriter(store, name, "import", dict(params or {}), **writer_options) as writer:
        writer.add_table(rows_to_table([(Record(**row) if isinstance(row, dict) else row).to_row() for row in rows]))
    return writer.manifest


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
