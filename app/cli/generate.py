"""`assay generate KIND`: a generator with its options as --OPTION VALUE, and the LLM settings."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from assay.app.cli.common import JsonFlag, current_store, out, run_command
from assay.core.errors import AssayError
from assay.core.llm import LLMConfig
from assay.core.options import coerce
from assay.pipelines.generate import generate as run_generator
from assay.pipelines.generate import generator_options

app = typer.Typer()


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def generate(ctx: typer.Context,
             kind: Annotated[str, typer.Argument(help="templates, self-instruct, evol-instruct, code-edits "
                                                      "or chain-of-task")],
             name: Annotated[str, typer.Option("--name", "-n", help="dataset for the new version")],
             run_id: Annotated[Optional[str], typer.Option("--run-id", help="resume or name the LLM run")] = None,
             base_url: Annotated[Optional[str], typer.Option("--base-url", envvar="ASSAY_LLM_BASE_URL",
                                                             help="OpenAI-compatible endpoint "
                                                                  "(default: embedded llama.cpp)")] = None,
             model: Annotated[Optional[str], typer.Option("--model", help="model name at the endpoint")] = None,
             temperature: Annotated[Optional[float], typer.Option("--temperature")] = None,
             max_tokens: Annotated[Optional[int], typer.Option("--max-tokens")] = None,
             concurrency: Annotated[Optional[int], typer.Option("--concurrency")] = None,
             as_json: JsonFlag = False) -> None:
    """Generate records with a generator; its options follow as --OPTION VALUE (see docs/generators.md),
    e.g. `assay generate self-instruct --seeds seeds.jsonl --n 20 --name si`."""

    def work():
        types = {o["name"]: o["type"] for o in generator_options(kind)}
        config: dict[str, Any] = {}
        args = list(ctx.args)
        while args:
            flag = args.pop(0)
            if not flag.startswith("--"):
                raise AssayError(f"unexpected argument {flag!r}: generator options are --OPTION VALUE")
            key, eq, value = flag[2:].partition("=")
            option = key.replace("-", "_")
            if option not in types:
                raise AssayError(f"{kind} has no option --{key}: options are "
                                 + ", ".join("--" + o.replace("_", "-") for o in types))
            if not eq:
                if not args:
                    raise AssayError(f"--{key} needs a value")
                value = args.pop(0)
            config[option] = coerce(value, types[option], option=f"--{key}")
        llm = {k: v for k, v in dict(base_url=base_url, model=model, temperature=temperature, max_tokens=max_tokens,
                                      concurrency=concurrency).items() if v is not None}
        return run_generator(current_store(), kind, name, config, LLMConfig(**llm), run_id)

    def render(r):
        where = (f"as {r['ref']} ({r['version'][:12]})" if r["version"]
                 else f"in {len(r['details']['versions'])} versions")
        out.print(f"{r['generator']}: {r['records']} records {where}; "
                  f"requested {r['requested']}, failed {r['failed']}; run {r['run_id']}")
        tasks = r["details"].get("tasks")
        if tasks and (len(tasks) > 1 or not r["version"]):  # several end tasks (chain-of-task): one line each
            # as wide as its rows: a task name wrapped over three lines would be hard to read or grep
            width = sum(max(len(str(k)), *(len(str(r.get(k, ""))) for r in tasks)) + 3 for k in tasks[0]) + 1
            Console(highlight=False, width=max(width, out.width), file=out.file).print(summary_table(tasks))

    run_command(as_json, work, render)


def summary_table(rows: list[dict[str, Any]]) -> Table:
    """One line per end task: its family, language and counts (and its version, when each has its own)."""
    table = Table()
    cols = list(dict.fromkeys(k for r in rows for k in r))
    for col in cols:
        table.add_column(col, overflow="fold", justify="right" if isinstance(rows[0].get(col), int) else "left")
    for r in rows:
        table.add_row(*(str(r.get(c, "")) for c in cols))
    return table
