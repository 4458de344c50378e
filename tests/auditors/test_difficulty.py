"""Instruction-following difficulty (IFD) with the trainer's base model: a real model's scores mean
something (a response is easier after its own instruction than after another's), the auditor runs
through `assay audit`'s runner with the record cache, and bad options are clear errors."""

import pytest
from auditor_helpers import codealpaca
from helpers import imported_version

from assay.auditors.difficulty import Difficulty, DifficultyConfig
from assay.auditors.runner import REGISTRY, make_auditor, run_audit
from assay.core.audits import audit_columns, filter_version
from assay.core.errors import AssayError


def short_codealpaca(shared_data, n: int) -> list[dict]:
    # short records: two forward passes each on a CPU
    return [r for r in codealpaca(shared_data) if len(r["instruction"]) + len(r["input"]) + len(r["output"]) < 260][:n]


@pytest.mark.slow  # ~45 s of CPU: SmolLM2's GGUF is dequantised and saved once, then 16 forward passes
def test_smollm2_finds_a_response_easier_after_its_own_instruction(store, shared_data, tmp_path):
    matched = short_codealpaca(shared_data, 4)
    # the same responses after another record's instruction: a misaligned pair
    swapped = [{**r, "instruction": matched[(k + 1) % 4]["instruction"], "input": matched[(k + 1) % 4]["input"]}
               for k, r in enumerate(matched)]
    version = imported_version(store, "d", matched + swapped)
    summary = run_audit(store, version.id, [make_auditor("difficulty")])["auditors"]["difficulty"]
    cols = audit_columns(store, version)
    ifd = cols["difficulty_ifd"].to_list()
    for k in range(4):
        # its own instruction lowers the response's loss (IFD < 1), and more than another one does
        assert ifd[k] < 1, (k, ifd)
        assert ifd[k] < ifd[4 + k], (k, ifd)
    assert cols["difficulty_loss_conditioned"][0] < cols["difficulty_loss_response"][0]
    assert summary["model"] == "smollm2-gguf" and summary["scored_records"] == 8
    assert summary["quantiles"]["p10"] <= summary["quantiles"]["p50"] <= summary["quantiles"]["p90"]
    assert summary["mean_ifd"] == pytest.approx(sum(ifd) / 8)
    assert summary["misaligned_records"] == sum(v > 1 for v in ifd)


def test_runner_cache_and_unscorable_records(store, shared_data, tmp_path):
    assert "difficulty" in REGISTRY
    rows = short_codealpaca(shared_data, 5) + [{"instruction": "Say nothing at all.", "input": "", "output": ""}]
    version = imported_version(store, "t", rows)
    options = {"model": "tiny-llama", "batch_size": 4}
    first = run_audit(store, version.id, [make_auditor("difficulty", options)])["auditors"]["difficulty"]
    assert first["scores_computed"] == 6 and first["scores_reused"] == 0
    cols = audit_columns(store, version)
    # an empty response has nothing to score: a flag, not a crash and not a number
    assert cols["difficulty_unscored"].to_list() == [False] * 5 + [True]
    assert cols["difficulty_ifd"][5] is None and all(v > 0 for v in cols["difficulty_ifd"][:5])
    assert first["scored_records"] == 5 and first["unscored_records"] == 1
    # a child version scores nothing again, and gets the same numbers for the rows it keeps
    child = filter_version(store, version.id, "source_row > 2", "t")
    again = run_audit(store, child.id, [make_auditor("difficulty", options)])["auditors"]["difficulty"]
    assert again["scores_computed"] == 0 and again["scores_reused"] == 4
    assert audit_columns(store, child)["difficulty_ifd"].to_list() == cols["difficulty_ifd"][2:].to_list()


def test_batching_does_not_change_the_scores(store, shared_data):
    import polars as pl

    from assay.auditors.base import AuditContext
    from assay.core.records import with_text

    rows = short_codealpaca(shared_data, 5)
    frame = with_text(pl.DataFrame([{**r, "id": str(k), "messages": None} for k, r in enumerate(rows)],
                                   schema_overrides={"messages": pl.List(pl.Struct({"role": pl.String,
                                                                                     "content": pl.String}))}))
    one = Difficulty(DifficultyConfig(model="tiny-llama", batch_size=1)).run(frame, AuditContext(store, "a"))
    many = Difficulty(DifficultyConfig(model="tiny-llama", batch_size=5)).run(frame, AuditContext(store, "b"))
    # padding and batch composition must not leak into a record's losses
    assert many.columns["difficulty_ifd"].to_list() == pytest.approx(one.columns["difficulty_ifd"].to_list(), rel=1e-4)


@pytest.mark.parametrize("options, message", [
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"max_response_tokens": "many"}, "max_response_tokens must be a positive integer"),
    ({"device": "tpu"}, "device must be auto, cpu or cuda"),
])
def test_bad_config_is_a_clear_error(options, message):
    with pytest.raises(AssayError, match="difficulty: " + message):
        make_auditor("difficulty", options)


def test_an_unknown_model_is_a_clear_error(store, tmp_path):
    version = imported_version(store, "m", [{"instruction": "a", "output": "b"}])
    with pytest.raises(AssayError, match="cannot load model"):
        run_audit(store, version.id, [make_auditor("difficulty", {"model": str(tmp_path / "no-such-model")})])
