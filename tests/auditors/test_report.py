import json

from helpers import write_jsonl

from assay.auditors.exact import ExactDuplicates
from assay.auditors.report import write_report
from assay.auditors.runner import run_audit
from assay.pipelines.importer import import_source

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_report_card_is_self_contained_and_escapes_record_text(store, tmp_path):
    rows = ([{"instruction": XSS, "output": "ok"}] * 3
            + [{"instruction": f"task {i}", "output": "x" * i} for i in range(20)])
    v1 = import_source(store, str(write_jsonl(tmp_path / "a.jsonl", rows)), "a")
    run_audit(store, v1.id, [ExactDuplicates()])
    v2 = store.filter(v1.id, "length(output) > 3", "a")
    run_audit(store, v2.id, [ExactDuplicates()])
    result = write_report(store, v1.id, str(tmp_path / "r" / "report.html"), compare=v2.id)
    html = (tmp_path / "r" / "report.html").read_text()
    assert "<script>" not in html and "onerror=alert(1)>" not in html
    assert "&lt;script&gt;" in html  # the payload is there, as text
    assert "http://" not in html and "https://" not in html  # nothing loaded from elsewhere
    assert html.count("data:image/png;base64,") >= 3  # length plots for both versions + duplicates
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [v["version"]["ref"] for v in data["versions"]] == ["a@1", "a@2"]
    assert data["versions"][0]["audits"]["exact"]["duplicate_records"] == 2
    assert data["versions"][1]["audits"]["exact"]["duplicate_records"] == 0
    assert data["diff"]["removed"] == 0 and data["diff"]["added"] == 5  # a@2 -> a@1: the payload and task 0..3
    assert result["auditors"] == ["exact"]


def test_report_of_an_unaudited_version_says_so(store, tmp_path):
    v = import_source(store, str(write_jsonl(tmp_path / "a.jsonl", [{"instruction": "a", "output": "b"}])), "a")
    write_report(store, v.id, str(tmp_path / "report.html"))
    assert "nothing yet (run assay audit)" in (tmp_path / "report.html").read_text()
