"""What every command group shares: the workspace's store, the console, `--json`, and `run_command`,
which prints a command's result and turns an AssayError into a clear message and exit code 1."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from assay.core.errors import AssayError
from assay.core.store import Store, default_workspace

out = Console(highlight=False, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")]
# --engine / --ray-address, shared by the commands that can run on a Ray cluster (docs/cluster.md)
EngineOption = Annotated[Optional[str], typer.Option(
    "--engine", help="where the per-record work runs: local (this machine) or ray (a Ray cluster); "
                     "default $ASSAY_ENGINE, else local")]
RayAddressOption = Annotated[Optional[str], typer.Option(
    "--ray-address", help="the Ray cluster's head (host:port) for --engine ray; default $RAY_ADDRESS, "
                          "else a local cluster started for this run")]
_state: dict[str, Any] = {}


def set_workspace(workspace: Optional[str]) -> None:
    _state["workspace"] = workspace or default_workspace()


def current_workspace() -> str:
    return _state.get("workspace") or default_workspace()


def current_store() -> Store:
    if "store" not in _state:
        _state["store"] = Store(current_workspace())
    return _state["store"]


def run_command(as_json: bool, work: Callable[[], Any], render: Callable[[Any], None]) -> None:
    """Run a command body; print its result as JSON or through `render`; turn AssayError into a
    one-line message and exit code 1."""
    try:
        if as_json:
            # libraries that print (transformers' Trainer logs, for one) must not break the one
            # JSON object on stdout: whatever they print goes to stderr
            with contextlib.redirect_stdout(sys.stderr):
                result = work()
        else:
            result = work()
    except AssayError as exc:
        if as_json:
            print(json.dumps({"error": str(exc)}, ensure_ascii=False))
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(result, ensure_ascii=False, default=str))
    else:
        render(result)


def short(text: str | None, width: int = 70) -> str:
    text = (text or "").replace("\n", " ⏎ ")
    return text if len(text) <= width else text[: width - 1] + "…"


def records_table(rows: list[dict]) -> Table:
    table = Table(show_lines=False)
    for col in ("id", "instruction / messages", "output"):
        table.add_column(col, overflow="fold")
    for r in rows:
        if r.get("messages"):
            first = r["messages"][0]["content"]
            table.add_row(r["id"][:12], short(f"[{len(r['messages'])} turns] {first}"), "")
        else:
            table.add_row(r["id"][:12], short(r["instruction"]), short(r["output"], 40))
    return table
