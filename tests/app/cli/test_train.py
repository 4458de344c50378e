"""`assay train` and `assay compare` (app/cli/train.py), in subprocesses."""

from helpers import write_jsonl


def test_train_and_compare_from_the_cli(cli, tmp_path):
    rows = [{"instruction": f"Repeat the word {w}.", "output": f"{w} {w} {w}"}
            for w in ("apple", "river", "cloud", "stone") * 4]
    a = cli.json("import", str(write_jsonl(tmp_path / "a.jsonl", rows)), "--name", "tr")
    b = cli.json("filter", "tr", "--where", "instruction NOT LIKE '%stone%'", "--name", "tr")
    run = cli.json("train", "tr@1", "--preset", "cpu-smoke", "-o", "max_steps=4")
    assert run["version"] == a["version"] and run["metrics"]
    result = cli.json("compare", "tr@1", "tr@2", "--preset", "cpu-smoke", "-o", "max_steps=4")
    assert result["runs"]["a"]["version"] == a["version"] and result["runs"]["b"]["version"] == b["version"]
    assert result["data"]["removed"] == 1 and set(result["delta"])
    bad = cli("train", "tr@1", "--preset", "huge", check=False)
    assert bad.returncode == 1 and "preset" in bad.stderr
