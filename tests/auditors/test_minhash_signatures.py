"""MinHash shingles and signatures (auditors/minhash_signatures.py), through the auditor."""

from __future__ import annotations

from helpers import imported_version

from assay.auditors.minhash import MinHashConfig, MinHashDuplicates
from assay.auditors.runner import run_audit
from assay.core.audits import audit_columns


def test_texts_without_shingles_are_never_clustered(store, tmp_path):
    rows = [{"instruction": "", "output": ""}, {"instruction": "!!!", "output": "?"}, {"instruction": "", "output": ""},
            {"instruction": "Name three primary colours.", "output": "Red, yellow and blue."},
            {"instruction": "name three primary colours", "output": "red yellow and blue"}]
    version = imported_version(store, "e", rows)
    summary = run_audit(store, version.id, [MinHashDuplicates()])["auditors"]["minhash"]
    cols = audit_columns(store, version)
    assert cols["minhash_no_shingles"].to_list() == [True, True, True, False, False]
    assert cols["minhash_duplicate"].to_list() == [False, False, False, False, True]
    assert cols["minhash_cluster"].to_list() == [0, 1, 2, 3, 3]
    assert summary["no_shingle_records"] == 3 and summary["duplicate_records"] == 1


def test_char_shingles_find_near_copies_in_unspaced_text(store, tmp_path):
    base = ("机器学习是人工智能的一个分支，它使计算机能够从数据中学习并不断改进，而无需进行明确的编程。"
            "深度学习是机器学习的一个子领域。")
    rows = [{"instruction": base, "output": ""}, {"instruction": base.replace("不断", "持续"), "output": ""},
            {"instruction": "今天天气很好，我们去公园散步吧，顺便买一些水果和面包回家。", "output": ""}]
    version = imported_version(store, "z", rows)
    run_audit(store, version.id, [MinHashDuplicates(MinHashConfig(shingle="char", ngram=3, threshold=0.7))])
    assert audit_columns(store, version)["minhash_duplicate"].to_list() == [False, True, False]
