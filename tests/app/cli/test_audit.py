"""`assay audit` (app/cli/audit.py), in subprocesses."""

from helpers import write_jsonl

ROWS = [{"instruction": f"Task {i}", "input": "", "output": "ok" * (i % 5)} for i in range(40)]


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
