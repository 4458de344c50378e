"""Fine-tune a causal LM on one dataset version, and record the run.

`train(store, version, config)` reads top to bottom:

1. resolve the version (the run records its exact id, whatever name it was given by);
2. load the base model and its tokenizer (no download; a GGUF is converted once and cached);
3. encode the records through the model's chat template, labels -100 on everything but the
   assistant turns;
4. train with transformers' Trainer (+ a peft LoRA adapter, or every weight for `method=full`),
   padding-free batches, seeds fixed, a checkpoint every `save_steps`;
5. evaluate on the fixed sets (held-out reference loss and ROUGE-L, benchmark perplexity probe,
   forgetting probe, optional HumanEval pass@1);
6. write `runs/train/<run_id>/run.json` and a row of the catalog's `train_runs` table.

While it trains, each logged loss is appended to `runs/train/<run_id>/curve.jsonl` (`live_curve`)
and, inside an app background job, reported with `assay.core.jobs.report`.

A run that was killed is continued with `train(store, version, config, resume=run_id)`: it starts
from the newest checkpoint in `runs/train/<run_id>/checkpoints/` (optimizer, scheduler, RNG and
data position included) with the configuration it was started with.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from assay.auditors.benchmarks import load_benchmark, load_benchmarks
from assay.core import jobs
from assay.core.errors import AssayError
from assay.core.manifest import code_version
from assay.core.models import load_model, load_tokenizer
from assay.core.sources import is_external
from assay.core.store import Manifest, Store
from assay.pipelines.importer import import_source

from .compile import compiled_layers
from .config import TrainConfig
from .data import FlatCollator, PaddedCollator, encode_frame
from .evaluate import evaluate, flat_metrics
from .loss import scored_tokens_trainer

TRAIN_RUNS_SCHEMA = """
CREATE TABLE IF NOT EXISTS train_runs (
    run_id       TEXT PRIMARY KEY,
    version      TEXT NOT NULL,          -- the exact version id trained on
    ref          TEXT NOT NULL,          -- NAME@N of that version, for people
    preset       TEXT NOT NULL,
    model        TEXT NOT NULL,
    method       TEXT NOT NULL,
    status       TEXT NOT NULL,          -- running | done | failed
    created_at   TEXT NOT NULL,
    finished_at  TEXT,
    code_version TEXT NOT NULL,
    config       TEXT NOT NULL,          -- JSON of TrainConfig
    metrics      TEXT,                   -- JSON, when done
    path         TEXT NOT NULL           -- runs/train/<run_id>, relative to the workspace
);
CREATE INDEX IF NOT EXISTS train_runs_by_version ON train_runs (version)
"""


COMPLETE = ".complete"  # marker of a checkpoint written to the end


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def run_dir(store: Store, run_id: str) -> Path:
    return Path(store.root) / "runs" / "train" / run_id


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(obj, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _record(store: Store, run: dict[str, Any]) -> None:
    store.catalog.ensure_schema(TRAIN_RUNS_SCHEMA)
    with store.catalog.write() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO train_runs (run_id, version, ref, preset, model, method, status, created_at,"
            " finished_at, code_version, config, metrics, path) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (run["run_id"], run["version"], run["ref"], run["config"]["preset"], run["config"]["model"],
             run["config"]["method"], run["status"], run["created_at"], run.get("finished_at"),
             run["code_version"], json.dumps(run["config"]),
             json.dumps(run["metrics"]) if run.get("metrics") is not None else None, run["path"]))


def resolve_reference(store: Store, config: TrainConfig) -> Manifest:
    """The reference set's version. A file path is imported once as a version of `eval-<file stem>`
    and `config.reference` becomes that version's id, so the run record (and both runs of a compare)
    name the exact data they were scored on."""
    try:
        return store.resolve(config.reference)
    except AssayError as exc:
        if not is_external(config.reference):  # the same "version, file or hf:" the generators read
            raise AssayError(f"train: reference set {config.reference!r} is neither a version nor a file "
                             f"(nor hf:OWNER/NAME): {exc}") from exc
    path = Path(config.reference)
    name = "eval-" + (re.sub(r"[^A-Za-z0-9_.\-]", "-", path.name.split(".")[0]) or "reference")
    manifest = import_source(store, config.reference, name, show_progress=False)
    config.reference = manifest.id
    return manifest


def _check(store: Store, version_ref: str, config: TrainConfig) -> Manifest:
    if not store.local:
        raise AssayError("train: the workspace must be a local folder (runs and checkpoints are written there)")
    config.validate()
    manifest = store.resolve(version_ref)
    if manifest.records == 0:
        raise AssayError(f"train: version {manifest.ref} ({manifest.id[:12]}) has no records to train on")
    # the evaluation sets are checked before training, not discovered broken after it
    if config.reference:
        reference = resolve_reference(store, config)
        if reference.records == 0:
            raise AssayError(f"train: reference set {reference.ref} has no records")
    if config.benchmarks:
        load_benchmarks(list(config.benchmarks))
    if config.forgetting:
        try:
            load_benchmark(config.forgetting)
        except AssayError as exc:
            raise AssayError(f"train: forgetting set: {exc}") from exc
    if not config.use_cpu:
        import torch

        if not torch.cuda.is_available():
            raise AssayError(f"train: preset {config.preset!r} trains on a GPU (use_cpu=false), and torch "
                             f"{torch.__version__} sees no CUDA GPU here: use --preset cpu-demo, or -o use_cpu=true")
    elif config.bf16:
        raise AssayError("train: bf16 is for GPU training; on the CPU use bf16=false")
    elif config.base_dtype == "bfloat16" and not _cpu_has_bf16():
        print("warning: train: this CPU has no bf16 matrix instructions (AVX512-BF16, AMX): base_dtype=bfloat16 "
              "saves memory but runs slower than float32", file=sys.stderr)
    _check_trackers(config)
    _check_model(config)
    # the tokenizer loads from the same place as the model: a model that cannot be found fails
    # here, before the run is recorded, not after
    load_tokenizer(config, store.root)
    return manifest


def _cpu_has_bf16() -> bool:
    import torch

    try:  # oneDNN's own test for native bf16 matmuls; a private helper, hence the fallback
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def _check_trackers(config: TrainConfig) -> None:
    from transformers.integrations import get_available_reporting_integrations

    missing = sorted(set(config.report_to) - set(get_available_reporting_integrations()))
    if missing:
        raise AssayError(f"train: report_to names {', '.join(missing)}, which transformers cannot find here "
                         f"(not installed, or not a tracker it knows): install it, or use -o report_to=[]")


def _check_model(config: TrainConfig) -> None:
    spec = config.model
    # a Hugging Face id looks like ORG/NAME (dots allowed: Qwen/Qwen2.5-0.5B): only what is
    # written as a path is checked as one here; an id not in the local cache fails when loaded
    if spec.startswith(("/", "./", "../", "~")):
        path = Path(spec).expanduser()
        if not path.exists():
            raise AssayError(f"train: model path {spec} does not exist")
        if path.is_dir() and not (path / "config.json").is_file():
            raise AssayError(f"train: model folder {spec} has no config.json (not a Hugging Face model folder)")


def train(store: Store, version_ref: str, config: TrainConfig | None = None, *, resume: str | None = None,
          show_progress: bool | None = None, callbacks: list | None = None, side: str | None = None) -> dict[str, Any]:
    """Train on `version_ref` and return the run record (also in runs/train/<run_id>/run.json).

    `resume`: the id of a run that did not finish; its saved config is used and `config` must be
    None or equal to it. `callbacks`: extra transformers TrainerCallbacks (tests use one to stop a
    run part-way). `side`: "a" or "b" when the run is one half of a comparison (reported to the
    app's job with the progress)."""
    started = time.perf_counter()
    if resume:
        run = load_run(store, resume)
        if run["status"] == "done":
            raise AssayError(f"train: run {resume} already finished; nothing to resume")
        saved = TrainConfig(**run["config"])
        if config is not None and config != saved:
            raise AssayError(f"train: run {resume} was started with another config; resume it without one")
        config = saved
        manifest = _check(store, run["version"], config)
    else:
        config = config or TrainConfig.from_preset("cpu-smoke")
        manifest = _check(store, version_ref, config)
        run_id = f"{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{manifest.id[:8]}-{uuid.uuid4().hex[:6]}"
        run = {"run_id": run_id, "version": manifest.id, "ref": manifest.ref, "records": manifest.records,
               "status": "running", "created_at": _now(), "code_version": code_version(),
               "config": config.to_dict(), "path": f"runs/train/{run_id}", "metrics": None}
    out = run_dir(store, run["run_id"])
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    _write_json(out / "run.json", run)
    _record(store, run)
    try:
        result = _fit(store, manifest, config, out, resume=bool(resume), show_progress=show_progress,
                      callbacks=[_LiveProgress.make(out, run["run_id"], side), *(callbacks or [])])
    except BaseException as exc:
        run.update(status="failed", finished_at=_now(), error=f"{type(exc).__name__}: {exc}")
        _write_json(out / "run.json", run)
        _record(store, run)
        raise
    result["metrics"]["wall_time_s"] = round(time.perf_counter() - started, 3)
    run.update(status="done", finished_at=_now(), **result)
    run.pop("error", None)
    _write_json(out / "run.json", run)
    _record(store, run)
    return run


def _fit(store: Store, manifest: Manifest, config: TrainConfig, out: Path, *, resume: bool,
         show_progress: bool | None, callbacks: list) -> dict[str, Any]:
    import torch
    from transformers import TrainingArguments, set_seed

    set_seed(config.seed)
    tokenizer = load_tokenizer(config, store.root)
    model = load_model(config, store.root, tokenizer)
    if config.method == "lora":
        from peft import LoraConfig, get_peft_model

        set_seed(config.seed)  # the adapter's init, independent of how the base was made
        model = get_peft_model(model, LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=config.lora_target_modules, task_type="CAUSAL_LM"))

    # a seeded shuffle before max_records: the subset is a sample of the version, not its first part
    frame = store.read(manifest).sample(fraction=1.0, shuffle=True, seed=config.seed)
    if config.max_records:
        frame = frame.head(config.max_records)
    enc = encode_frame(tokenizer, frame, config.max_seq_len)
    if not enc.examples:
        raise AssayError(f"train: no record of {manifest.ref} has a response within max_seq_len="
                         f"{config.max_seq_len} tokens")
    warnings = []
    if enc.truncated:
        warnings.append(f"{enc.truncated} of {enc.records} records of {manifest.ref} are longer than max_seq_len="
                        f"{config.max_seq_len} tokens and were cut (records_truncated)")
    if enc.skipped:
        warnings.append(f"{enc.skipped} of {enc.records} records of {manifest.ref} were skipped: no response "
                        f"token within max_seq_len={config.max_seq_len} (records_skipped)")
    for line in warnings:
        print(f"warning: train: {line}", file=sys.stderr)

    interactive = sys.stderr.isatty() if show_progress is None else show_progress
    # save_total_limit=2: the Trainer deletes old checkpoints before the new one is marked complete,
    # so keeping one more leaves a complete checkpoint at every moment
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.lr,
        num_train_epochs=config.epochs, max_steps=config.max_steps or -1, lr_scheduler_type="linear",
        warmup_steps=float(config.warmup_ratio), weight_decay=config.weight_decay, logging_steps=config.logging_steps,
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=2, seed=config.seed,
        data_seed=config.seed, bf16=config.bf16, use_cpu=config.use_cpu,
        report_to=[name for name in config.report_to if name != "tensorboard"],
        disable_tqdm=not interactive, dataloader_num_workers=0, remove_unused_columns=False)
    if "tensorboard" in config.report_to:
        # transformers' own TensorBoard callback, with the event files in the run's folder rather
        # than under checkpoints/runs/<time>_<host>
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks = [*callbacks, TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(out / "tensorboard")))]
    varlen = config.padding_free and config.varlen_attention
    if varlen:
        from .attention import use_varlen

        use_varlen(model)
    collator = (FlatCollator(config.flat_multiple_of, tokenizer.pad_token_id, varlen=varlen) if config.padding_free
                else PaddedCollator(tokenizer.pad_token_id))
    trainer_cls = scored_tokens_trainer(config.loss_chunk_tokens)
    trainer = trainer_cls(model=model, args=args, train_dataset=enc.examples, data_collator=collator,
                          callbacks=callbacks)
    checkpoint = _last_checkpoint(out / "checkpoints") if resume else None
    t0 = time.perf_counter()
    with compiled_layers(model, config.compile_mode):
        result = trainer.train(resume_from_checkpoint=checkpoint)
    train_s = time.perf_counter() - t0

    logs = trainer.state.log_history
    curve = [{"step": e["step"], "loss": e["loss"]} for e in logs if "loss" in e]
    weights = out / ("adapter" if config.method == "lora" else "model")
    model.save_pretrained(weights)
    tokenizer.save_pretrained(weights)

    _job_report(stage="evaluating", run_id=out.name)
    evals = evaluate(model, tokenizer, store, config)
    steps = trainer.state.global_step
    first_step = int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0
    epochs_done = trainer.state.epoch or 0.0
    metrics = {
        "train_loss": result.training_loss,
        "train_loss_first": curve[0]["loss"] if curve else None,
        "train_loss_last": curve[-1]["loss"] if curve else None,
        "steps": steps, "epochs": epochs_done,
        "examples": len(enc.examples), "records_read": enc.records, "records_skipped": enc.skipped,
        "records_truncated": enc.truncated, "tokens_per_epoch": enc.tokens,
        "response_tokens_per_epoch": enc.response_tokens,
        # tokens pushed through the model in this process (a resumed run: since its checkpoint), over
        # the training loop's own time (loading and evaluation excluded)
        "train_tokens_per_s": round(enc.tokens * epochs_done * (steps - first_step) / max(steps, 1) / train_s, 1)
        if train_s > 0 else None,
        "train_time_s": round(train_s, 3),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "resumed_from": Path(checkpoint).name if checkpoint else None,
        **flat_metrics(evals),
    }
    _write_json(out / "log_history.json", logs)
    return {"metrics": metrics, "curve": curve, "eval": evals, "warnings": warnings,
            "weights_path": str(weights.relative_to(store.root)), "device": str(trainer.args.device),
            "tensorboard_path": str((out / "tensorboard").relative_to(store.root))
            if "tensorboard" in config.report_to else None,
            "torch": torch.__version__}


def _job_report(**kwargs: Any) -> None:
    """Progress for the app's background job running this process (a no-op outside a job)."""
    jobs.report(**{k: v for k, v in kwargs.items() if v is not None})


class _LiveProgress:
    """A TrainerCallback (built lazily: transformers is imported only when a run starts) that
    appends each logged loss to runs/train/<id>/curve.jsonl while training, so `live_curve` and
    the app can plot a run that is still going, and reports the step to the app's job."""

    @staticmethod
    def make(out: Path, run_id: str, side: str | None):
        from transformers import TrainerCallback

        class LiveProgress(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                _job_report(done=state.global_step, total=state.max_steps, stage=_stage(side), run_id=run_id,
                            side=side)

            def on_step_end(self, args, state, control, **kwargs):
                _job_report(done=state.global_step, total=state.max_steps, stage=_stage(side), run_id=run_id,
                            step=state.global_step, side=side)

            def on_save(self, args, state, control, **kwargs):
                # the Trainer writes checkpoint-N file by file; this marker, renamed into place once
                # it is done, is what makes the checkpoint count (a kill mid-save leaves none)
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    tmp = folder / f".complete.tmp-{uuid.uuid4().hex}"
                    tmp.write_text(_now(), encoding="utf-8")
                    os.replace(tmp, folder / COMPLETE)

            def on_log(self, args, state, control, logs=None, **kwargs):
                if not logs or "loss" not in logs:
                    return
                point = {"step": state.global_step, "loss": logs["loss"], "epoch": state.epoch,
                         "lr": logs.get("learning_rate"), "time": _now()}
                # one short line per append: a reader sees whole lines (a torn last line is skipped)
                with open(out / "curve.jsonl", "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(point) + "\n")
                _job_report(done=state.global_step, total=state.max_steps, stage=_stage(side), run_id=run_id,
                            step=state.global_step, loss=logs["loss"], side=side)

        return LiveProgress()


def _stage(side: str | None) -> str:
    return f"training {side.upper()}" if side else "training"


def live_curve(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The loss curve of a run so far, read from its curve.jsonl (also while it trains): one point
    per step, sorted; a resumed run's re-done steps replace the killed attempt's."""
    path = run_dir(store, load_run(store, run_id)["run_id"]) / "curve.jsonl"
    points: dict[int, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                point = json.loads(line)
            except json.JSONDecodeError:  # the line being written right now
                continue
            points[point["step"]] = point
    return [points[k] for k in sorted(points)]


def _last_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint that was written to the end (see LiveProgress.on_save)."""
    found = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and (p / COMPLETE).is_file()]
    return str(max(found, key=lambda p: int(p.name.split("-")[-1]))) if found else None


def load_run(store: Store, run_id: str) -> dict[str, Any]:
    """A run record by id (or unique id prefix)."""
    store.catalog.ensure_schema(TRAIN_RUNS_SCHEMA)
    rows = store.catalog.query("SELECT run_id FROM train_runs WHERE run_id LIKE ? LIMIT 2", (run_id + "%",))
    if len(rows) != 1:
        raise AssayError(f"train: {'ambiguous' if rows else 'unknown'} run id {run_id!r}")
    path = run_dir(store, rows[0]["run_id"]) / "run.json"
    return json.loads(path.read_text(encoding="utf-8"))


def list_train_runs(store: Store, version: str | None = None) -> list[dict[str, Any]]:
    """Train runs, newest first (optionally only those on one version ref)."""
    store.catalog.ensure_schema(TRAIN_RUNS_SCHEMA)
    sql = ("SELECT run_id, version, ref, preset, model, method, status, created_at, finished_at, metrics, path "
           "FROM train_runs")
    rows = (store.catalog.query(sql + " WHERE version = ? ORDER BY created_at DESC", (store.resolve(version).id,))
            if version else store.catalog.query(sql + " ORDER BY created_at DESC"))
    return [{**dict(r), "metrics": json.loads(r["metrics"]) if r["metrics"] else None} for r in rows]
