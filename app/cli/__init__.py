"""The `assay` command line. Every command is a thin wrapper over a library call, and takes --json to
print exactly one JSON object on stdout (errors too: {"error": ...}, with a non-zero exit).

The root app holds the global options; the commands live in one module per group (datasets, audit,
generate, train, annotate, serve, llm, jobs), which share `common` and do not import each other."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from assay.app.cli import annotate, audit, datasets, generate, jobs, llm, serve, train
from assay.app.cli.common import set_workspace

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Assay: build, audit and test instruction-tuning datasets, with every step a version.")


@app.callback()
def _main(workspace: Annotated[Optional[str], typer.Option(
        "--workspace", "-w", envvar="ASSAY_WORKSPACE",
        help="workspace folder or fsspec URL (default: ./.assay)")] = None) -> None:
    set_workspace(workspace)


# the order here is the order `assay --help` lists the commands in
app.add_typer(datasets.app)
app.add_typer(audit.app)
app.add_typer(generate.app)
app.add_typer(train.app)
app.add_typer(annotate.annotate_app, name="annotate")
app.add_typer(serve.app)
app.add_typer(llm.llm_app, name="llm")
app.add_typer(llm.runs_app, name="runs")
app.add_typer(jobs.jobs_app, name="jobs")


def main() -> None:
    app()
