"""`assay generate` (app/cli/generate.py), in subprocesses."""

from helpers import write_jsonl


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
