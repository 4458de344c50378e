"""The real `assay` command, in subprocesses, as a user runs it."""

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


def test_errors_are_one_line_non_zero_and_json_when_asked(cli, tmp_path):
    proc = cli("show", "nope", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["error: unknown version 'nope': no dataset, id or id prefix matches"]
    proc = cli("diff", "a@1", "b@1", "--json", check=False)
    assert proc.returncode == 1 and "unknown version" in json.loads(proc.stdout)["error"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    proc = cli("import", str(bad), "--name", "bad", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {bad}:2: field 'output': missing"
    assert cli.json("versions")["versions"] == []


def test_map_option(cli, tmp_path):
    src = write_jsonl(tmp_path / "qa.jsonl", [{"q": "Why?", "a": "Because."}])
    result = cli.json("import", str(src), "--name", "qa", "--map", "instruction=q,output=a")
    assert result["mapping"] == {"instruction": "q", "output": "a"}
    rec = cli.json("show", "qa")["records"][0]
    assert (rec["instruction"], rec["output"]) == ("Why?", "Because.")


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


def test_audit_then_filter_on_audit_columns(cli, tmp_path):
    rows = ROWS + ROWS[:5]
    cli.json("import", str(write_jsonl(tmp_path / "t.jsonl", rows)), "--name", "t")
    result = cli.json("audit", "t", "--auditors", "exact", "-o", "exact.lowercase=false")
    assert result["auditors"]["exact"]["duplicate_records"] == 5
    assert result["auditors"]["exact"]["config"]["lowercase"] is False
    kept = cli.json("filter", "t", "--where", "NOT exact_duplicate", "--name", "t")
    assert kept["records"] == 40
    bad = cli("audit", "t", "--auditors", "nope", check=False)
    assert bad.returncode == 1 and "unknown auditor 'nope'" in bad.stderr


def test_generate_templates_from_the_cli(cli, tmp_path):
    qa = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(5)]
    cli.json("import", str(write_jsonl(tmp_path / "qa.jsonl", qa)), "--name", "qa")
    report = cli.json("generate", "templates", "--name", "qa-flan", "--source", "qa", "--tasks", "qa,qa-inverted",
                      "--mode", "zero-shot", "--limit", "3")
    assert report["records"] > 0 and (report["requested"], report["failed"]) == (0, 0)  # no LLM calls
    rows = cli.json("show", report["version"], "--size", "100")["records"]
    assert {r["generator"] for r in rows} == {"templates"} and all(r["template"] for r in rows)
    assert any("2 + 2" in r["output"] for r in rows)  # the inverted task asks for the question
    bad = cli("generate", "templates", "--name", "x", "--no-such-option", "1", check=False)
    assert bad.returncode == 1 and "has no option --no-such-option" in bad.stderr
    bad = cli("generate", "templates", "--name", "x", "--shots", "many", check=False)
    assert bad.returncode == 1 and "--shots: expected int" in bad.stderr


def test_train_and_compare_from_the_cli(cli, tmp_path):
    rows = [{"instruction": f"Repeat the word {w}.", "output": f"{w} {w} {w}"} for w in ("apple", "river", "cloud", "stone") * 4]
    a = cli.json("import", str(write_jsonl(tmp_path / "a.jsonl", rows)), "--name", "tr")
    b = cli.json("filter", "tr", "--where", "instruction NOT LIKE '%stone%'", "--name", "tr")
    run = cli.json("train", "tr@1", "--preset", "cpu-smoke", "-o", "max_steps=4")
    assert run["version"] == a["version"] and run["metrics"]
    result = cli.json("compare", "tr@1", "tr@2", "--preset", "cpu-smoke", "-o", "max_steps=4")
    assert result["runs"]["a"]["version"] == a["version"] and result["runs"]["b"]["version"] == b["version"]
    assert result["data"]["removed"] == 1 and set(result["delta"])
    bad = cli("train", "tr@1", "--preset", "huge", check=False)
    assert bad.returncode == 1 and "preset" in bad.stderr
