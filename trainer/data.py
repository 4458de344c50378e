"""Records -> token ids and labels for training and evaluation: packed and padded batches over
`assay.core.chat_tokens`, which renders a record through the model's own chat template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from assay.core.chat_tokens import IGNORE, encode_chat, to_messages

if TYPE_CHECKING:  # polars stays out of the import: the GPU bench runs where it is not installed
    import polars as pl

def encode_text(tokenizer, text: str, max_len: int) -> dict[str, list[int]] | None:
    """Plain text (a benchmark item), every token scored: for perplexity probes."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_len]
    if len(ids) < 2:
        return None
    return {"input_ids": ids, "labels": list(ids)}


@dataclass
class Encoded:
    examples: list[dict[str, list[int]]]
    records: int  # records read
    skipped: int  # records with no response token within max_seq_len (or no assistant turn)
    truncated: int  # records cut to max_seq_len

    @property
    def tokens(self) -> int:
        return sum(len(e["input_ids"]) for e in self.examples)

    @property
    def response_tokens(self) -> int:
        return sum(sum(1 for x in e["labels"] if x != IGNORE) for e in self.examples)


def encode_frame(tokenizer, frame: "pl.DataFrame", max_len: int) -> Encoded:
    return encode_rows(tokenizer, frame.select("instruction", "input", "output", "messages").iter_rows(named=True),
                       max_len)


def encode_rows(tokenizer, rows: Iterable[dict[str, Any]], max_len: int) -> Encoded:
    """Records (dicts with instruction/input/output or messages) -> training examples, counted."""
    examples, records, skipped, truncated = [], 0, 0, 0
    for row in rows:
        records += 1
        ex = encode_chat(tokenizer, to_messages(row), max_len + 1)
        if ex is None:
            skipped += 1
            continue
        if len(ex["input_ids"]) > max_len:
            truncated += 1
            ex = {k: v[:max_len] for k, v in ex.items()}
            if all(label == IGNORE for label in ex["labels"]):
                skipped += 1
                continue
        examples.append(ex)
    return Encoded(examples, records, skipped, truncated)


class PaddedCollator:
    """Pads a batch to its longest example (labels with -100, attention mask 0 on pads)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, list[int]]]):
        import torch

        width = max(len(e["input_ids"]) for e in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, e in enumerate(batch):
            n = len(e["input_ids"])
            ids[row, :n] = torch.tensor(e["input_ids"])
            labels[row, :n] = torch.tensor(e["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class FlatCollator:
    """Padding-free batching: the batch's examples laid end to end in one row, position ids
    restarting at 0 for each, so attention (transformers builds a block-diagonal causal mask from
    the position ids) never crosses examples and no pad token is computed. The first label of each
    example is -100: it would otherwise be scored as predicted from the previous example.

    `multiple_of` > 1 rounds the row up with a filler segment (pad ids, no labels, its own
    positions): on a GPU each new row length makes the attention kernels plan anew, so a few
    hundred distinct lengths cost more than the few filler tokens (< multiple_of per row)."""

    def __init__(self, multiple_of: int = 1, pad_id: int = 0, *, varlen: bool = False):
        self.multiple_of, self.pad_id, self.varlen = multiple_of, pad_id, varlen

    def __call__(self, batch: list[dict[str, list[int]]]):
        import torch

        ids, labels, pos, lengths = [], [], [], []
        for e in batch:
            ids.extend(e["input_ids"])
            labels.extend([IGNORE] + e["labels"][1:])
            pos.extend(range(len(e["input_ids"])))
            lengths.append(len(e["input_ids"]))
        fill = -len(ids) % self.multiple_of
        if fill:
            ids.extend([self.pad_id] * fill)
            labels.extend([IGNORE] * fill)
            pos.extend(range(fill))
            lengths.append(fill)
        out = {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]), "position_ids": torch.tensor([pos])}
        if self.varlen:  # the records' bounds, for varlen attention (trainer/attention.py)
            cu = torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32)
            out.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(lengths), max_length_k=max(lengths))
        return out
