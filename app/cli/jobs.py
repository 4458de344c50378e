"""`assay jobs`: list, start, show and cancel background jobs."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table

from assay.app.cli.common import JsonFlag, current_store, out, run_command, short
from assay.core import jobs

jobs_app = typer.Typer(help="Background jobs started from the app (or with `assay jobs start`).",
                       invoke_without_command=True)


@jobs_app.callback()
def jobs_list(ctx: typer.Context, kind: Annotated[Optional[str], typer.Option(help="only this kind")] = None,
              as_json: JsonFlag = False) -> None:
    """List background jobs, newest first (a job whose process died shows as failed)."""
    if ctx.invoked_subcommand:
        return

    def render(r):
        table = Table()
        for col in ("job", "kind", "status", "progress", "title", "error"):
            table.add_column(col)
        for j in r["jobs"]:
            done = f"{j['done']}/{j['total']}" if j["total"] else str(j["done"])
            table.add_row(j["id"], j["kind"], j["status"], done, short(j["title"], 40), short(j["error"], 50))
        out.print(table)

    run_command(as_json, lambda: {"jobs": [j.summary() for j in jobs.list_jobs(current_store(), kind)]}, render)


@jobs_app.command("start")
def jobs_start(command: Annotated[list[str], typer.Argument(help="the assay command, e.g. audit demo -a exact")],
               kind: Annotated[str, typer.Option(help="a label to group jobs by")] = "cli",
               as_json: JsonFlag = False) -> None:
    """Run an assay command as a background job (its --json output becomes the job's result)."""
    # the job adds --json itself (its result is that JSON object)
    argv = [a for a in command if a != "--json"]
    run_command(as_json, lambda: {"job": jobs.start(current_store(), argv, kind=kind)},
                lambda r: out.print(f"started job {r['job']}"))


@jobs_app.command("show")
def jobs_show(job_id: Annotated[str, typer.Argument(help="job id")],
              log: Annotated[int, typer.Option(help="lines of its log to include")] = 20,
              as_json: JsonFlag = False) -> None:
    """One job: status, progress, result or error, and the end of its log."""

    def work():
        return {"job": jobs.get(current_store(), job_id).summary(), "log": jobs.log_tail(current_store(), job_id, log)}

    def render(r):
        out.print(json.dumps(r["job"], ensure_ascii=False, indent=1, default=str))
        out.print(r["log"], markup=False)

    run_command(as_json, work, render)


@jobs_app.command("cancel")
def jobs_cancel(job_id: Annotated[str, typer.Argument(help="job id")], as_json: JsonFlag = False) -> None:
    """Stop a running job and its process group."""
    run_command(as_json, lambda: {"job": jobs.cancel(current_store(), job_id).summary()},
                lambda r: out.print(f"job {r['job']['id']}: {r['job']['status']}"))
