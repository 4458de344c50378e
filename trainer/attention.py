"""Variable-length attention for padding-free rows.

A padding-free row holds a batch's records end to end. With plain SDPA, transformers gives the
row a block-diagonal causal mask (T x T): no record sees another, but the kernel still computes
every one of the T^2 scores, masked or not, so the attention work of a row of 16 records is 16
times that of the records alone (measured on an H100: at 64 records a row, padding-free SDPA ran
at 0.4x the padded baseline). `varlen` attention runs each record's own causal attention from
the row's cumulative lengths (`cu_seq_lens_q`, as flash-attention's varlen API takes them):

- on CUDA, PyTorch's flash-attention varlen kernel (`torch.nn.attention.varlen.varlen_attn`);
- elsewhere, SDPA per record (causal, no mask). On the 2-core CPU box this ran the cpu-smoke model
  at 2,584 real tokens/s against 397 with the block-diagonal mask.

Anything called without the lengths (evaluation with padded batches, generation) goes to SDPA
with transformers' usual masks, so the model behaves exactly as with `sdpa` there.
"""

from __future__ import annotations

import torch  # this module is imported when a run switches to varlen attention, not with the package

NAME = "assay_varlen"
_registered = False


def register() -> str:
    """Register the attention function and its mask function with transformers (once)."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        def mask(*args, **kwargs):
            # the varlen path needs no mask; an explicit padding mask (evaluation, generation) gets SDPA's
            if kwargs.get("attention_mask") is None:
                return None
            return sdpa_mask(*args, **kwargs)

        AttentionInterface.register(NAME, varlen_attention)
        AttentionMaskInterface.register(NAME, mask)
        _registered = True
    return NAME


def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     cu_seq_lens_q=None, max_length_q=None, **kwargs):
    """query (1, H, T, D), key/value (1, Hkv, T, D) -> (1, T, H, D), as transformers' SDPA returns."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if cu_seq_lens_q is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (T, H, D)
    if q.is_cuda:
        from torch.nn.attention.varlen import varlen_attn

        if k.shape[1] != q.shape[1]:  # grouped-query attention: each kv head serves a group of q heads
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        # the flash kernel takes half precision only; under autocast q/k/v come out of the rotary
        # embedding in float32 (SDPA is cast by autocast itself, this custom op is not)
        half = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.bfloat16
        q, k, v = (t.to(half) for t in (q, k, v))
        cu = cu_seq_lens_q.to(torch.int32)
        # max_length_q is the collator's int as is: int() of it would make a compiled layer specialise on
        # every row's longest record (trainer/compile.py)
        out = varlen_attn(q, k, v, cu, cu, max_length_q, max_length_q, scale=scaling, window_size=(-1, 0))
        # back to the caller's precision: without autocast (the Trainer's bf16 need not use it) the
        # output projection's weights are float32
        return out.unsqueeze(0).to(query.dtype), None
    return _per_record_sdpa(query, key, value, cu_seq_lens_q, scaling), None


# not traced by torch.compile (trainer/compile.py): the loop runs over the row's record bounds, and
# a compiled loop would be specialised on them, i.e. compiled anew for every batch
@torch.compiler.disable
def _per_record_sdpa(query, key, value, cu_seq_lens_q, scaling):
    bounds = cu_seq_lens_q.tolist()
    parts = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end > start:
            parts.append(torch.nn.functional.scaled_dot_product_attention(
                query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], is_causal=True, scale=scaling,
                enable_gqa=key.shape[1] != query.shape[1]))
    return torch.cat(parts, dim=2).transpose(1, 2)


def use_varlen(model) -> None:
    """Switch a loaded model (or the model under a peft wrapper) to varlen attention."""
    register()
    model.config._attn_implementation = NAME
