"""Loss over the scored tokens only.

A causal LM's output layer is the costliest part of a small model's step: SmolLM2's vocabulary has
49,152 tokens, so the logits of one 1,000-token batch are 49M floats. Only the response tokens are
scored (labels != -100), so the hidden states are gathered at those positions first and the output
layer runs on them alone: the same loss, with the output layer's work cut by the share of prompt
tokens (over half, for typical instruction data).
"""

from __future__ import annotations

from .data import IGNORE


# what the model is given (labels are not: the loss is computed here); the cu_seq_lens/max_length
# keys are the padding-free row's record bounds for varlen attention (trainer/attention.py)
MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q",
                "max_length_k")


def causal_lm(model):
    """The transformers *ForCausalLM under a peft wrapper (its LoRA layers stay active)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def scored_loss_sum(model, batch: dict):
    """(sum of token losses, number of scored tokens) for a batch with `labels`."""
    import torch.nn.functional as F

    lm = causal_lm(model)
    inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
    # use_cache=False: no KV cache in training, and with a cache transformers would not build the
    # block-diagonal mask that keeps padding-free examples from attending to each other
    hidden = lm.model(**inputs, use_cache=False).last_hidden_state  # (batch, seq, hidden)
    targets = batch["labels"][:, 1:]  # position t predicts token t+1
    keep = targets != IGNORE
    logits = lm.lm_head(hidden[:, :-1][keep])
    loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
    return loss, int(keep.sum())


def scored_tokens_trainer():
    """transformers' Trainer whose loss runs the output layer on the response tokens only (a
    factory: transformers is imported when a run starts, not when the package is)."""
    from transformers import Trainer

    class ScoredTokensTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            total, count = scored_loss_sum(model, inputs)
            # num_items_in_batch: scored tokens over all the accumulated batches of this step, so
            # the step's loss is the mean over its tokens, however they fall into batches
            loss = total / (num_items_in_batch if num_items_in_batch is not None else max(count, 1))
            return (loss, None) if return_outputs else loss

    return ScoredTokensTrainer
