"""Fixed evaluation sets, independent of the versions being compared.

- reference: a held-out version (its first N records): mean loss per response token and its
  perplexity, through the chat template exactly as in training.
- contamination probe: perplexity on the text of benchmark items (first N of each). A model whose
  training data held the test items scores them with a markedly lower perplexity than one that did
  not; read it as a difference between two runs on the same base, not as an absolute number.

Loss is summed over tokens and divided once (not a mean of batch means), so batch size and padding
do not change it.
"""

from __future__ import annotations

import math
from typing import Any

from assay.core.errors import AssayError

from .data import PaddedCollator, encode_frame, encode_text
from .loss import scored_loss_sum


def token_loss(model, examples: list[dict[str, list[int]]], *, batch_size: int, pad_id: int) -> dict[str, Any]:
    import torch

    if not examples:
        return {"loss": None, "perplexity": None, "tokens": 0, "items": 0}
    collate = PaddedCollator(pad_id)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(examples), batch_size):
                batch = {k: v.to(device) for k, v in collate(examples[start:start + batch_size]).items()}
                loss_sum, scored = scored_loss_sum(model, batch)
                total += loss_sum.item()
                count += scored
    finally:
        model.train(was_training)
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count, "items": len(examples)}


def evaluate(model, tokenizer, store, config) -> dict[str, Any]:
    """Every configured evaluation set -> {"reference": {...} | None, "benchmarks": {name: {...}}}."""
    from assay.auditors.benchmarks import load_benchmarks

    out: dict[str, Any] = {"reference": None, "benchmarks": {}}
    pad = tokenizer.pad_token_id
    if config.reference:
        manifest = store.resolve(config.reference)
        frame = store.read(manifest).head(config.reference_records)
        enc = encode_frame(tokenizer, frame, config.max_seq_len)
        if not enc.examples:
            raise AssayError(f"train: reference set {manifest.ref} has no record with a response to score")
        out["reference"] = {"version": manifest.id, "ref": manifest.ref,
                            **token_loss(model, enc.examples, batch_size=config.eval_batch_size, pad_id=pad)}
    if config.benchmarks:
        for bench in load_benchmarks(list(config.benchmarks)):
            texts = bench.items.head(config.benchmark_items)["text"].to_list()
            examples = [e for e in (encode_text(tokenizer, t, config.max_seq_len) for t in texts) if e]
            out["benchmarks"][bench.name] = {
                "spec": bench.spec, **token_loss(model, examples, batch_size=config.eval_batch_size, pad_id=pad)}
    return out


def flat_metrics(evals: dict[str, Any]) -> dict[str, float]:
    """The evaluation numbers as flat name -> value (what compare subtracts)."""
    out: dict[str, float] = {}
    if evals.get("reference"):
        out["reference_loss"] = evals["reference"]["loss"]
        out["reference_perplexity"] = evals["reference"]["perplexity"]
    for name, res in evals.get("benchmarks", {}).items():
        if res["loss"] is not None:
            out[f"benchmark_perplexity/{name}"] = res["perplexity"]
    return out
