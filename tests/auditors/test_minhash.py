"""MinHash LSH near-duplicates: planted copies in real data, agreement with datasketch, calibration,
the record cache across versions, config errors and texts without shingles."""

import json
import random
import re

import numpy as np
import pytest
from auditor_helpers import WORD_RE as WORD
from auditor_helpers import codealpaca, datasketch_labels, jaccard, ref_shingles
from helpers import imported_version, write_jsonl

from assay.auditors.minhash import MinHashConfig, MinHashDuplicates
from assay.auditors.runner import make_auditor, run_audit
from assay.core.audits import audit_columns, audit_detail, filter_version
from assay.core.errors import AssayError
from assay.pipelines.importer import import_source


def text_of(row: dict) -> str:
    """The auditor's `text` view of an Alpaca row (instruction, input, output)."""
    prompt = row["instruction"] if not row["input"] else row["instruction"] + "\n\n" + row["input"]
    return prompt if not row["output"] else prompt + "\n\n" + row["output"]


def edit_words(text: str, k: int, rng: random.Random) -> str:
    """k light edits: alternately replace an alphabetic word by a made-up one, or insert one."""
    spots = [m for m in re.finditer(r"[A-Za-z]{3,}", text)]
    for e, m in enumerate(sorted(rng.sample(spots, min(k, len(spots))), key=lambda m: m.start(), reverse=True)):
        new = "qz" + "".join(rng.choice("bcdfgjkvwx") for _ in range(5))
        text = text[:m.start()] + (new if e % 2 == 0 else m.group() + " " + new) + text[m.end():]
    return text


def test_planted_near_duplicates_in_real_data_are_found(store, shared_data, tmp_path):
    rows = codealpaca(shared_data)
    rng = random.Random(7)
    long_rows = [i for i, r in enumerate(rows) if len(ref_shingles(text_of(r))) >= 80]
    originals, planted = [], []
    for i in rng.sample(long_rows, len(long_rows)):
        copy = dict(rows[i])
        copy["output"] = edit_words(copy["output"], 1 + len(planted) % 2, rng)  # one or two words edited
        # keep light edits only: true Jaccard >= 0.88, well above the 0.8 threshold
        if jaccard(ref_shingles(text_of(copy)), ref_shingles(text_of(rows[i]))) >= 0.88 and len(planted) < 40:
            originals.append(i)
            planted.append(copy)
    assert len(planted) == 40
    version = import_source(store, str(write_jsonl(tmp_path / "c.jsonl", rows + planted)), "c")
    summary = run_audit(store, version.id, [MinHashDuplicates()])["auditors"]["minhash"]
    cols = audit_columns(store, version)
    n = len(rows)
    copies = cols[n:]
    assert copies["minhash_duplicate"].all()
    # each copy joins its original's cluster (the original, or an earlier near-copy of it)
    assert copies["minhash_cluster"].to_list() == cols["minhash_cluster"].gather(originals).to_list()
    assert (copies["minhash_jaccard"] >= 0.8).all() and (copies["minhash_cluster_size"] >= 2).all()
    # clean real data: at most 0.5% of the original records flagged (observed: 3 of 4,535, all true
    # near-copies in CodeAlpaca itself, e.g. two Levenshtein functions worded slightly differently)
    clean_flagged = int(cols[:n]["minhash_duplicate"].sum())
    assert clean_flagged <= 0.005 * n
    assert summary["duplicate_records"] == 40 + clean_flagged
    assert summary["bands"] * summary["rows"] <= 128 and summary["examples"]
    # the columns drive `assay filter`: dropping duplicates removes every planted copy
    kept = filter_version(store, version.id, "NOT minhash_duplicate", "c")
    assert kept.records == n - clean_flagged


def test_decisions_agree_with_datasketch(store, shared_data, tmp_path):
    rows = codealpaca(shared_data)
    rng = random.Random(11)
    long_rows = [i for i, r in enumerate(rows) if len(ref_shingles(text_of(r))) >= 70]
    planted = []
    for k, i in enumerate(rng.sample(long_rows, 150)):
        copy = dict(rows[i])
        copy["output"] = edit_words(copy["output"], 1 + k % 4, rng)  # 1 to 4 edits: Jaccard ~0.6 to ~0.95
        planted.append(copy)
    all_rows = rows + planted
    version = import_source(store, str(write_jsonl(tmp_path / "c.jsonl", all_rows)), "c")
    auditor = MinHashDuplicates()
    bands, rows_per_band = auditor.effective_bands_rows()
    run_audit(store, version.id, [auditor])
    ours = audit_columns(store, version)["minhash_duplicate"].to_numpy()
    # the reference: datasketch MinHash.bulk over the same shingles, MinHashLSH with the same bands x
    # rows, candidates kept when MinHash.jaccard >= 0.8 (bench/minhash_reference.py)
    labels = datasketch_labels([text_of(r) for r in all_rows], 0.8, 128, (bands, rows_per_band))
    theirs = labels != np.arange(len(all_rows))
    assert ours.sum() >= 50 and theirs.sum() >= 50  # not a vacuous agreement on "nothing is a duplicate"
    # the two use different hash functions, so pairs whose Jaccard is near 0.8 can fall either side
    agreement = (ours == theirs).mean()
    assert agreement >= 0.99, f"agreement {agreement:.4f}: ours {ours.sum()}, datasketch {theirs.sum()}"


def test_calibration_pairs_carry_the_true_jaccard(store, shared_data, tmp_path):
    questions = [json.loads(line)["question"] for line in
                 (shared_data / "benchmarks/gsm8k_test.jsonl").read_text().splitlines()]
    long_q = [q for q in questions if len(WORD.findall(q.lower())) >= 50][:300]
    rng = random.Random(3)
    pairs = []
    for q in long_q[:3]:
        pairs.append((q, edit_words(q, 1, rng)))
    rows = [{"instruction": q, "input": "", "output": ""} for q in long_q[3:]]
    for a, b in pairs:
        rows += [{"instruction": a, "input": "", "output": ""}, {"instruction": b, "input": "", "output": ""}]
    version = imported_version(store, "q", rows)
    run_audit(store, version.id, [MinHashDuplicates()])
    cal = audit_detail(store, version, "minhash", "calibration")
    assert cal.height and cal["estimated_jaccard"].is_between(0.65 - 1e-9, 0.95 + 1e-9).all()
    found = 0
    base = len(rows) - 2 * len(pairs)
    for k, (a, b) in enumerate(pairs):
        # by hand: the two questions' word 5-gram sets, built here
        truth = jaccard(ref_shingles(a), ref_shingles(b))
        assert 0.75 < truth < 0.9
        hit = cal.filter((cal["pos_a"] == base + 2 * k) & (cal["pos_b"] == base + 2 * k + 1))
        if hit.height:
            found += 1
            assert hit["true_jaccard"][0] == pytest.approx(truth, abs=1e-12)
            assert hit["text_a"][0] == a[:500] and hit["text_b"][0] == b[:500]
            assert hit["outcome"][0] == ("true positive" if hit["accepted"][0] else "false negative")
    assert found >= 2


def test_child_version_reuses_every_signature(store, shared_data, tmp_path):
    version = import_source(store, str(write_jsonl(tmp_path / "c.jsonl", codealpaca(shared_data, 2000))), "c")
    first = run_audit(store, version.id, [MinHashDuplicates()])["auditors"]["minhash"]
    assert first["signatures_computed"] == 2000 and first["signatures_reused"] == 0
    cache_dir = store.path("cache", "minhash")
    chunks = sorted(store.fs.find(cache_dir))
    child = filter_version(store, version.id, "source_row % 10 <> 0", "c")
    assert child.records == 1800
    again = run_audit(store, child.id, [MinHashDuplicates()])["auditors"]["minhash"]
    assert again["signatures_computed"] == 0 and again["signatures_reused"] == 1800
    # another threshold changes no signature either
    other = run_audit(store, child.id, [MinHashDuplicates(MinHashConfig(threshold=0.6))])["auditors"]["minhash"]
    assert other["signatures_computed"] == 0 and other["bands"] != again["bands"]
    assert sorted(store.fs.find(cache_dir)) == chunks  # no new cache chunk was written
    # a setting that changes signatures (the shingle size) computes them afresh
    fresh = run_audit(store, child.id, [MinHashDuplicates(MinHashConfig(ngram=3))])["auditors"]["minhash"]
    assert fresh["signatures_computed"] == 1800


@pytest.mark.parametrize("options, message", [
    ({"threshold": 0}, "threshold must be a number in \\(0, 1\\]"),
    ({"threshold": 1.5}, "threshold must be a number in \\(0, 1\\]"),
    ({"threshold": "high"}, "threshold must be a number"),
    ({"shingle": "token"}, "shingle must be word or char"),
    ({"column": "metadata"}, "column must be text, prompt or response"),
    ({"bands": 20}, "give bands and rows together"),
    ({"bands": 20, "rows": 10}, "bands x rows = 200 exceeds num_perm = 128"),
    ({"ngram": 0}, "ngram must be an integer"),
])
def test_bad_config_is_a_clear_error(options, message):
    with pytest.raises(AssayError, match="minhash: " + message):
        make_auditor("minhash", options)


def test_many_parts_and_small_verify_batches_give_the_same_clusters(store, shared_data, tmp_path, monkeypatch):
    """The streaming path (signatures mapped part by part, pairs verified a batch of texts at a
    time, read back from the version by position) decides exactly as one part and one batch do."""
    import assay.auditors.minhash as minhash_module
    import assay.core.store as store_module

    rows = codealpaca(shared_data)[:1500]
    rng = random.Random(3)
    rows += [{**r, "output": edit_words(r["output"], 1 + k % 3, rng)} for k, r in enumerate(rng.sample(rows, 300))]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    one = import_source(store, str(path), "one")
    run_audit(store, one.id, [MinHashDuplicates()])
    monkeypatch.setattr(store_module, "SEGMENT_ROWS", 97)  # 19 parts, boundaries inside clusters
    monkeypatch.setattr(minhash_module, "VERIFY_BATCH", 7)
    many = import_source(store, str(path), "many")
    assert len(many.parts) > 15
    summary = run_audit(store, many.id, [MinHashDuplicates()])["auditors"]["minhash"]
    assert summary["verified_pairs"] > 7  # more than one verify batch ran
    expected, got = audit_columns(store, one), audit_columns(store, many)
    assert got["minhash_duplicate"].sum() >= 50  # real clusters to compare (observed: 78)
    assert got.drop("_pos").equals(expected.drop("_pos"))


def test_signatures_too_many_to_hold_are_read_back_part_by_part_with_the_same_results(
        store, shared_data, tmp_path, monkeypatch):
    """Above LOCAL_SIGNATURE_BYTES the local reduce gets head keys and shingle counts, not the
    signatures, and reads those from the record cache part by part (band keys, then each chunk of
    pairs): the columns and the summary are the in-memory path's."""
    import assay.auditors.minhash_parts as minhash_parts
    import assay.core.store as store_module

    rows = codealpaca(shared_data)[:1500]
    rng = random.Random(4)
    rows += [{**r, "output": edit_words(r["output"], 1 + k % 4, rng)} for k, r in enumerate(rng.sample(rows, 300))]
    rows += rows[:120]  # exact copies: grouped by head key, then compared in full
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    monkeypatch.setattr(store_module, "SEGMENT_ROWS", 211)  # 9 parts
    held, by_parts = import_source(store, str(path), "held"), import_source(store, str(path), "parts")
    seen = []
    reduce = MinHashDuplicates.reduce
    monkeypatch.setattr(MinHashDuplicates, "reduce", lambda self, mapped, *a: seen.append(mapped.columns)
                        or reduce(self, mapped, *a))
    expected = run_audit(store, held.id, [MinHashDuplicates()])["auditors"]["minhash"]
    monkeypatch.setattr(minhash_parts, "LOCAL_SIGNATURE_BYTES", 1000)  # two records' worth
    monkeypatch.setattr(minhash_parts, "PAIRS_PER_TASK", 40)  # several chunks of pairs
    got = run_audit(store, by_parts.id, [MinHashDuplicates()])["auditors"]["minhash"]
    assert "minhash_sig" in seen[0] and seen[1] == ["minhash_head", "shingles"]
    assert len(by_parts.parts) > 5 and got["accepted_pairs"] > 40  # the pairs span several chunks
    assert got["duplicate_records"] >= 150  # the 120 copies and near-duplicates (observed: 188)
    assert audit_columns(store, by_parts).drop("_pos").equals(audit_columns(store, held).drop("_pos"))
    cache_counts = ("signatures_computed", "signatures_reused")  # the second version's are all reused
    assert {k: v for k, v in got.items() if k not in cache_counts} == \
        {k: v for k, v in expected.items() if k not in cache_counts}
