"""The dataset commands (app/cli/datasets.py): the real `assay` command, in subprocesses, as a user runs it."""

import json

from helpers import write_jsonl

ROWS = [{"instruction": f"Task {i}", "input": "", "output": "ok" * (i % 5)} for i in range(40)]


def test_import_filter_diff_lineage_export_verify(cli, tmp_path):
    src = write_jsonl(tmp_path / "tasks.jsonl", ROWS)
    imported = cli.json("import", str(src), "--name", "tasks")
    assert imported["records"] == 40 and imported["ref"] == "tasks@1"
    filtered = cli.json("filter", "tasks", "--where", "length(output) >= 4", "--name", "tasks")
    assert filtered["records"] == sum(1 for r in ROWS if len(r["output"]) >= 4) and filtered["ref"] == "tasks@2"
    d = cli.json("diff", "tasks@1", "tasks@2")
    assert (d["added"], d["removed"], d["unchanged"]) == (0, 40 - filtered["records"], filtered["records"])
    lineage = cli.json("lineage", filtered["version"][:10])
    assert [step["operation"] for step in lineage["lineage"]] == ["filter", "import"]
    versions = cli.json("versions")["versions"]
    assert [v["ref"] for v in versions] == ["tasks@1", "tasks@2"]
    shown = cli.json("show", "tasks@2", "--page", "1", "--size", "5")
    assert shown["manifest"]["parents"] == [imported["version"]] and len(shown["records"]) == 5
    out = tmp_path / "out.jsonl"
    exported = cli.json("export", "tasks", str(out))
    assert exported["records"] == filtered["records"]
    assert [json.loads(line) for line in out.read_text().splitlines()] == [r for r in ROWS if len(r["output"]) >= 4]
    assert cli.json("verify")["ok"] is True
    # human output works too
    assert "tasks@2" in cli("versions").stdout


def test_map_option(cli, tmp_path):
    src = write_jsonl(tmp_path / "qa.jsonl", [{"q": "Why?", "a": "Because."}])
    result = cli.json("import", str(src), "--name", "qa", "--map", "instruction=q,output=a")
    assert result["mapping"] == {"instruction": "q", "output": "a"}
    rec = cli.json("show", "qa")["records"][0]
    assert (rec["instruction"], rec["output"]) == ("Why?", "Because.")


def test_import_memory_options(cli, tmp_path):
    src = write_jsonl(tmp_path / "big.jsonl", ROWS)
    proc = cli("import", str(src), "--name", "m", "--chunk-mb", "32", "--max-memory-mb", "50", check=False)
    assert proc.returncode == 1 and "over max_memory_mb=50; lower chunk_mb" in proc.stdout + proc.stderr
    assert cli.json("versions")["versions"] == []
    small = cli.json("import", str(src), "--name", "m", "--chunk-mb", "0.001")  # many batches, same records
    assert small["records"] == 40


def test_verify_fails_on_corruption(cli, tmp_path, workspace):
    cli.json("import", str(write_jsonl(tmp_path / "t.jsonl", ROWS)), "--name", "t")
    seg = next((workspace / "objects" / "segments").iterdir())
    seg.write_bytes(seg.read_bytes()[:-10] + b"corrupted!")
    proc = cli("verify", check=False)
    assert proc.returncode == 1 and "PROBLEM" in proc.stdout and "hash mismatch" in proc.stdout


def test_demo_runs_offline(cli):
    result = cli.json("demo")
    assert result["verify_ok"] is True and len(result["versions"]) == 2
    assert "imported 164 HumanEval problems" in result["log"][0]
