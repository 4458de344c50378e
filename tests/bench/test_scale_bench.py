"""Test-sized version of bench/scale_bench.py: Assay finds the planted near-duplicates (issue 13), and
the peers' harness (bench/scale_peers.py) measures a tool in a fresh process and scores what it read
back. The suite runs only datasketch (a test dependency) as the peer; datatrove and text-dedup live in
bench/.venv-peers, which the suite never installs."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from scale_bench import assay_side  # noqa: E402
from scale_peers import compare  # noqa: E402


def test_planted_duplicates_found_at_2000_records():
    pr = assay_side(2000)["score"]["all_planted"]
    assert pr["precision"] >= 0.95 and pr["recall"] >= 0.95, pr


def test_peer_harness_measures_and_scores_each_tool_in_its_own_process():
    figures = compare(2000, tools=("datasketch",), peers_python=Path(sys.executable))
    rows = {r["tool"]: r for r in figures["tools"]}
    assert set(rows) == {"assay", "datasketch"}
    for r in rows.values():
        assert "error" not in r, r
        # the tool's own section is inside its process's lifetime, and a Python process with numpy
        # loaded has tens of MB resident
        assert 0 < r["wall_s"] < r["process_s"], r
        assert r["peak_rss_mb"] > 30 and r["peak_tree_rss_mb"] > 30, r
        assert r["duplicates"] > 0, r
    assert rows["assay"]["score"]["all_planted"]["recall"] >= 0.95
    # datasketch decides by the estimate, so it is near but not always at Assay's figures
    assert rows["datasketch"]["score"]["all_planted"]["recall"] >= 0.85
    assert figures["assay_speed_over_fastest_peer"]["fastest_peer"] == "datasketch"
