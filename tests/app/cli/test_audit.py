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


def test_the_plain_output_names_each_auditor_with_its_time_and_memory(cli, tmp_path):
    # only streaming auditors: the version is never read as one frame, and the output still says
    # how long reading took
    cli.json("import", str(write_jsonl(tmp_path / "t.jsonl", ROWS + ROWS[:5])), "--name", "t")
    shown = cli("audit", "t", "--auditors", "exact,minhash").stdout
    assert "audited t@1 (45 records; read in" in shown
    for name in ("exact", "minhash"):
        line = next(line for line in shown.splitlines() if line.strip().startswith(name))
        assert "peak RSS" in line and " s, " in line
    assert "duplicate_records=5" in shown
