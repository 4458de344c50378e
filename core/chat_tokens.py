"""A record -> token ids and labels, through the model's own chat template (the trainer trains on
them; the difficulty auditor scores the same tokens).

An Alpaca record becomes a two-turn chat (user: instruction, then input after a blank line;
assistant: output); a chat record keeps its turns. The loss is on the assistant turns only: every
other token's label is -100, which the causal-LM loss ignores.

The template is rendered for growing prefixes of the conversation, so each turn's text is exactly
the part the template adds for it (with the generation prompt "<|im_start|>assistant\\n" counted as
prompt, and the closing "<|im_end|>" as response, so the model learns to stop).

No heavy import here: the GPU bench imports this where polars is not installed.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100


def to_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    if row.get("messages") is not None:
        return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    prompt = row["instruction"] if not row.get("input") else f"{row['instruction']}\n\n{row['input']}"
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]


def encode_chat(tokenizer, messages: list[dict[str, str]], max_len: int) -> dict[str, list[int]] | None:
    """input_ids and labels (-100 outside assistant turns), cut to max_len; None when no response
    token is left to learn from."""
    ids: list[int] = []
    labels: list[int] = []
    done = ""
    for i, msg in enumerate(messages):
        if msg["role"] == "assistant":
            head = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
            _extend(tokenizer, ids, labels, _piece(done, head), learn=False)
            done = head
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        _extend(tokenizer, ids, labels, _piece(done, upto), learn=msg["role"] == "assistant")
        done = upto
    ids, labels = ids[:max_len], labels[:max_len]
    if all(label == IGNORE for label in labels):
        return None
    return {"input_ids": ids, "labels": labels}


def _piece(done: str, rendered: str) -> str:
    if not rendered.startswith(done):  # a template that rewrites earlier turns (rare)
        raise ValueError("chat template is not prefix-stable; cannot mask the prompt turns")
    return rendered[len(done):]


def _extend(tokenizer, ids: list[int], labels: list[int], text: str, *, learn: bool) -> None:
    if not text:
        return
    piece = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids.extend(piece)
    labels.extend(piece if learn else [IGNORE] * len(piece))
