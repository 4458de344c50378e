"""Loss over the scored tokens only.

A causal LM's output layer is the costliest part of a small model's step: SmolLM2's vocabulary has
49,152 tokens, so the logits of one 1,000-token batch are 49M floats. Only the response tokens are
scored (labels != -100), so the hidden states are gathered at those positions first and the output
layer runs on them alone: the same loss, with the output layer's work cut by the share of prompt
tokens (over half, for typical instruction data).

With `chunk_tokens`, the output layer and the cross-entropy run a chunk of scored tokens at a time,
and each chunk's gradients are taken right there (`ChunkedLinearCrossEntropy`): a chunk's logits
stay in the CPU's cache instead of a (tokens x 49k) matrix going through memory three times
(logits, softmax, their gradient). The loss and the gradients are the same sums; only the order of
the work changes. This is the chunked loss of torchtune and Liger-Kernel's fused linear
cross-entropy, written for the CPU (Liger's is Triton, GPU only).
"""

from __future__ import annotations

import functools

from assay.core.chat_tokens import IGNORE
from assay.core.models import causal_lm

# what the model is given (labels are not: the loss is computed here); the cu_seq_lens/max_length
# keys are the padding-free row's record bounds for varlen attention (trainer/attention.py)
MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q",
                "max_length_k")


@functools.cache  # one class per process, built when first used (torch is imported then, not at import)
def _chunked_function():
    import threading

    import torch

    class ChunkedLinearCrossEntropy(torch.autograd.Function):
        """sum over tokens of cross_entropy(hidden @ weight.T, targets), in chunks of tokens.

        The gradients with respect to hidden (and weight, when it is trained) are computed in the
        forward pass, chunk by chunk, while the chunk's logits are at hand; backward only scales them.
        One scratch matrix (chunk x vocabulary) is reused for every chunk and every step: on the
        CPU, a fresh matrix of that size costs more in page faults than the exp over it.
        """

        scratch = threading.local()  # per thread: two trainings in one process must not share it

        @staticmethod
        def forward(ctx, hidden, weight, targets, chunk: int, grad_enabled: bool):
            # forward runs with autograd off, so whether gradients will be wanted is passed in
            need_hidden = grad_enabled and ctx.needs_input_grad[0]
            need_weight = grad_enabled and ctx.needs_input_grad[1]
            ctx.weight_dtype = weight.dtype
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_hidden = torch.empty_like(hidden) if need_hidden else None
            grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
            work = ChunkedLinearCrossEntropy._scratch(min(chunk, hidden.shape[0]), weight.shape[0], hidden.device)
            for start in range(0, hidden.shape[0], chunk):
                h, t = hidden[start:start + chunk], targets[start:start + chunk]
                rows = torch.arange(len(t), device=t.device)
                logits = work[:len(t)]
                if h.dtype == weight.dtype == torch.float32:
                    torch.mm(h, weight.t(), out=logits)
                else:  # half precision (autocast on a GPU): the product is cast into the float32 scratch
                    logits.copy_(h @ weight.t().to(h.dtype))
                # log-sum-exp with one exp pass, whose result is then the softmax: stable (the row's
                # maximum is taken out first) and in place
                top = logits.amax(dim=1)
                target_logit = logits[rows, t] - top
                sums = logits.sub_(top[:, None]).exp_().sum(dim=1)
                total += (sums.log() - target_logit).sum()
                if need_hidden or need_weight:
                    # d(loss)/d(logits) = softmax - one_hot(target)
                    probs = logits.div_(sums[:, None])
                    probs[rows, t] -= 1.0
                    probs = probs.to(h.dtype)
                    if need_hidden:
                        grad_hidden[start:start + chunk] = probs @ weight.to(h.dtype)
                    if need_weight:
                        grad_weight.addmm_(probs.t().float(), h.float())
            ctx.save_for_backward(grad_hidden, grad_weight)
            return total

        @staticmethod
        def _scratch(rows: int, vocab: int, device):
            if device.type != "cpu":  # the GPU's caching allocator already reuses the memory
                return torch.empty(rows, vocab, dtype=torch.float32, device=device)
            scratch = ChunkedLinearCrossEntropy.scratch
            have = getattr(scratch, "matrix", None)
            if have is None or have.shape[0] < rows or have.shape[1] != vocab:
                have = scratch.matrix = torch.empty(rows, vocab, dtype=torch.float32)
            return have

        @staticmethod
        def backward(ctx, grad_total):
            grad_hidden, grad_weight = ctx.saved_tensors
            return (grad_hidden * grad_total if grad_hidden is not None else None,
                    (grad_weight * grad_total).to(ctx.weight_dtype) if grad_weight is not None else None,
                    None, None, None)

    return ChunkedLinearCrossEntropy


def linear_cross_entropy_sum(hidden, lm_head, targets, chunk_tokens: int = 0):
    """Sum of the cross-entropy of `lm_head(hidden)` against `targets` (hidden: scored positions only)."""
    import torch
    import torch.nn.functional as F

    if chunk_tokens <= 0 or getattr(lm_head, "bias", None) is not None or not hasattr(lm_head, "weight"):
        return F.cross_entropy(lm_head(hidden).float(), targets, reduction="sum")
    return _chunked_function().apply(hidden, lm_head.weight, targets, chunk_tokens, torch.is_grad_enabled())


def scored_loss_sum(model, batch: dict, chunk_tokens: int = 0):
    """(sum of token losses, number of scored tokens) for a batch with `labels`; `chunk_tokens` > 0
    runs the output layer and the loss that many tokens at a time (ChunkedLinearCrossEntropy)."""

    lm = causal_lm(model)
    inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
    # use_cache=False: no KV cache in training, and with a cache transformers would not build the
    # block-diagonal mask that keeps padding-free examples from attending to each other
    hidden = lm.model(**inputs, use_cache=False).last_hidden_state  # (batch, seq, hidden)
    targets = batch["labels"][:, 1:]  # position t predicts token t+1
    keep = targets != IGNORE
    loss = linear_cross_entropy_sum(hidden[:, :-1][keep], lm.lm_head, targets[keep], chunk_tokens)
    return loss, int(keep.sum())


def scored_tokens_trainer(chunk_tokens: int = 0):
    """transformers' Trainer whose loss runs the output layer on the response tokens only (a
    factory: transformers is imported when a run starts, not when the package is)."""
    from transformers import Trainer

    class ScoredTokensTrainer(Trainer):
        _flos_per_token: int | None = None

        def floating_point_ops(self, inputs):
            # the Trainer's estimate (6 x tokens x non-embedding weights) walks every module and
            # parameter of the model on every step: ~5 ms of host time for SmolLM2 under LoRA, a
            # share of a small model's GPU step, which the host bounds. The weight count does not
            # change during a run, so it is taken once (from the Trainer's own formula, one token)
            name = getattr(self.model, "main_input_name", "input_ids")
            if name not in inputs:
                return super().floating_point_ops(inputs)
            if self._flos_per_token is None:
                import torch

                self._flos_per_token = super().floating_point_ops({name: torch.zeros(1, 1, dtype=torch.long)})
            return self._flos_per_token * inputs[name].numel()

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            total, count = scored_loss_sum(model, inputs, chunk_tokens)
            # num_items_in_batch: scored tokens over all the accumulated batches of this step, so
            # the step's loss is the mean over its tokens, however they fall into batches
            loss = total / (num_items_in_batch if num_items_in_batch is not None else max(count, 1))
            return (loss, None) if return_outputs else loss

    return ScoredTokensTrainer
