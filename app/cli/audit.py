"""`assay audit` (auditors over a version) and `assay report` (the report card from stored audits)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from assay.app.cli.common import EngineOption, JsonFlag, RayAddressOption, current_store, out, run_command
from assay.auditors.report import write_report
from assay.auditors.runner import auditor_class, make_auditor, run_audit
from assay.core.errors import AssayError
from assay.core.options import coerce_fields, parse_scoped_assignments

app = typer.Typer()


@app.command()
def audit(version: Annotated[str, typer.Argument(help="version to audit")],
          auditors: Annotated[str, typer.Option("--auditors", "-a", help="comma-separated auditor names")] = "exact",
          benchmark: Annotated[Optional[list[str]], typer.Option(
              "--benchmark", help="contamination benchmark: human-eval, a file (PATH or PATH:question_field), "
                                  "or hf:ID")] = None,
          option: Annotated[Optional[list[str]], typer.Option(
              "--option", "-o", help="auditor setting AUDITOR.FIELD=VALUE, e.g. minhash.threshold=0.8")] = None,
          engine: EngineOption = None,
          ray_address: RayAddressOption = None,
          as_json: JsonFlag = False) -> None:
    """Run auditors on a version; results become columns for `assay filter --where`."""

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
        return run_audit(current_store(), version, built, show_progress=None if not as_json else False,
                         engine=engine, ray_address=ray_address)

    def render(r):
        steps = r["steps"]
        read = sum(step.get("read_seconds", 0.0) for step in steps.values()) + steps.get("read", {}).get("seconds", 0.0)
        out.print(f"audited {r['ref']} ({r['records']} records; read in {read:.1f} s)")
        for name, summary in r["auditors"].items():
            figures = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) and k != "config"}
            step = steps[name]  # a streaming auditor's seconds: its pass over the parts and its reduce
            seconds = step["seconds"]
            out.print(f"  {name:<14} " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                 for k, v in figures.items())
                      + f"  ({seconds:.1f} s, peak RSS {step['peak_rss_mb']:,.0f} MB)")

    run_command(as_json, work, render)


@app.command()
def report(version: Annotated[str, typer.Argument(help="version to report on")],
           out_path: Annotated[str, typer.Option(
               "--out", help="HTML file to write (its JSON goes beside it)")] = "report.html",
           compare: Annotated[Optional[str], typer.Option(
               "--compare", help="a second version, shown side by side")] = None,
           as_json: JsonFlag = False) -> None:
    """Write the report card of a version (from its stored audits) as self-contained HTML + JSON."""
    run_command(as_json, lambda: write_report(current_store(), version, out_path, compare),
                lambda r: out.print(f"wrote {r['html']} and {r['json']} ({' vs '.join(r['versions'])}; "
                             f"audits: {', '.join(r['auditors']) or 'none'})"))
