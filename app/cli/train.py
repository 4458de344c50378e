"""`assay train` and `assay compare`: fine-tune on a version, or on two with the same config."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from assay.app.cli.common import JsonFlag, current_store, out, run_command
from assay.core.options import parse_assignments
from assay.trainer.compare import compare as run_compare
from assay.trainer.config import TrainConfig
from assay.trainer.train import train as run_training

app = typer.Typer()


def _train_config(preset: str, model: Optional[str], method: Optional[str], options: list[str] | None):
    return TrainConfig.from_preset(preset, model=model, method=method,
                                   **parse_assignments(options or [], TrainConfig))


TrainPreset = Annotated[str, typer.Option("--preset",
                                          help="cpu-smoke (seconds, tests), cpu-demo (SmolLM2 + LoRA), gpu")]
TrainModel = Annotated[Optional[str], typer.Option("--model",
                                                   help="Hugging Face model id or local path (default: the preset's)")]
TrainMethod = Annotated[Optional[str], typer.Option("--method", help="lora or full")]
TrainOptions = Annotated[Optional[list[str]], typer.Option("--option", "-o", help="any TrainConfig field, FIELD=VALUE")]


@app.command()
def train(version: Annotated[str, typer.Argument(help="version to fine-tune on")],
          preset: TrainPreset = "cpu-smoke", model: TrainModel = None, method: TrainMethod = None,
          option: TrainOptions = None,
          resume: Annotated[Optional[str], typer.Option(
              "--resume", help="run id to resume from its last checkpoint")] = None,
          as_json: JsonFlag = False) -> None:
    """Fine-tune a causal LM on a version; the run is recorded with the exact version it used."""

    def work():
        return run_training(current_store(), version, _train_config(preset, model, method, option), resume=resume,
                            show_progress=None if not as_json else False)

    run_command(as_json, work, lambda r: out.print(json.dumps(
        {k: r[k] for k in r if k in ("run_id", "version", "metrics", "warnings")}, indent=1, default=str)))


@app.command()
def compare(a: Annotated[str, typer.Argument(help="version A (the baseline)")],
            b: Annotated[str, typer.Argument(help="version B")],
            preset: TrainPreset = "cpu-smoke", model: TrainModel = None, method: TrainMethod = None,
            option: TrainOptions = None,
            out_path: Annotated[Optional[str], typer.Option(
                "--out", help="HTML report to write (its JSON goes beside it); "
                              "default: runs/compare/<id>/report.html in the workspace")] = None,
            as_json: JsonFlag = False) -> None:
    """Train on A and on B with the same config, seed and evaluation sets; print both runs and the delta,
    and write an HTML report (curves, metric deltas, data diff, audits)."""

    def work():
        return run_compare(current_store(), a, b, _train_config(preset, model, method, option),
                           show_progress=None if not as_json else False, out=out_path)

    run_command(as_json, work, lambda r: out.print(json.dumps(
        {"data": r["data"], "delta": r["delta"], "report": r["report"]}, indent=1, default=str)))
