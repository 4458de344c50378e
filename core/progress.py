"""Progress bars for long work: shown on a terminal (stderr), silent in pipes, tests and --json.
Inside a background job (see core/jobs.py) every bar also reports to the job, so the app shows it."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _Silent:
    def advance(self, n: int = 1) -> None:
        pass


class _JobReporter:
    """Counts a bar's progress and records it on the job this process runs for."""

    def __init__(self, inner, description: str, total: int | None):
        from . import jobs

        self._inner, self._report, self._done = inner, jobs.report, 0
        self._total, self._stage = total, description
        self._report(done=0, total=total, stage=description)

    def advance(self, n: int = 1) -> None:
        self._inner.advance(n)
        self._done += n
        # total and stage again: a bar inside another (an auditor's chunks inside the audit) has
        # replaced them on the job while it ran
        self._report(done=self._done, total=self._total, stage=self._stage)


class _Bar:
    def __init__(self, progress: Progress, task):
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)


@contextmanager
def progress(description: str, total: int | None = None, enabled: bool | None = None) -> Iterator[_Bar | _Silent]:
    """`with progress("importing", total=n) as bar: bar.advance(k)`; total=None shows a running count."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    in_job = bool(os.environ.get("ASSAY_JOB_ID"))
    if not enabled:
        yield _JobReporter(_Silent(), description, total) if in_job else _Silent()
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        shown = _Bar(bar, bar.add_task(description, total=total))
        yield _JobReporter(shown, description, total) if in_job else shown
