"""What every command shares (app/cli/common.py): errors as one line, exit 1, and JSON when asked."""

import json


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
