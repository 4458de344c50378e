"""The Datasets & versions page and the app shell, through Streamlit's AppTest (the script runs for
real against a real workspace; only the browser is left out)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import imported_version, run_page
from streamlit.testing.v1 import AppTest

from assay.core import jobs
from assay.core.store import Store

UI = Path(__file__).resolve().parents[2] / "app" / "ui"


@pytest.fixture
def ws(app_workspace):
    return app_workspace


def run(page: str) -> AppTest:
    return run_page(page)


def texts(at: AppTest) -> list[str]:
    return [t.value for t in at.text]


def test_shell_lands_on_datasets_and_lists_every_page(ws):
    at = run("main.py")
    assert [t.value for t in at.title] == ["Datasets & versions"]
    assert at.button(key="demo").label == "Run the demo"
    assert "Run the demo" in [b.label for b in at.button]
    source = (UI / "main.py").read_text()
    for page in ("page_datasets.py", "page_review.py", "page_generate.py", "page_audit.py", "page_train.py",
                 "page_annotate.py"):
        assert f'"{page}"' in source and (UI / page).exists()


def test_demo_button_imports_and_starts_the_generator_jobs(ws):
    at = run("page_datasets.py")
    at.button(key="demo").click().run()
    assert not at.exception, at.exception
    store = Store(ws)
    refs = sorted(v["ref"] for v in store.versions())
    assert refs == ["demo-seeds@1", "humaneval@1"]
    assert store.resolve("humaneval").records == 164 and store.resolve("demo-seeds").records == 11
    started = jobs.list_jobs(store, kind="generate")
    argvs = sorted(j.argv[:2] for j in started)
    assert argvs == [["generate", "code-edits"], ["generate", "self-instruct"]]
    si = next(j for j in started if j.argv[1] == "self-instruct")
    assert si.argv[si.argv.index("--seeds") + 1] == store.resolve("demo-seeds").id
    shown = texts(at)
    assert any(t.startswith("imported 164 HumanEval problems") for t in shown)
    assert any(re.fullmatch(r"job id \S+", t) for t in shown)  # the jobs panel is on the page


def test_versions_manifest_lineage_and_diff(ws, tmp_path):
    store = Store(ws)
    rows = [{"instruction": f"Say {i}", "output": "ok" if i % 2 else "a longer answer"} for i in range(12)]
    v1 = imported_version(store, "words", rows)
    v2 = store.filter(v1.id, "length(output) < 5", "words")
    at = run("page_datasets.py")
    assert at.selectbox(key="datasets_dataset").value == "words"
    assert at.selectbox(key="datasets_version").value == "words@2"  # newest first
    lineage = "\n".join(c.value for c in at.code)
    assert re.search(r"words@2\s+filter\s+6 records", lineage) and re.search(r"words@1\s+import\s+12 records", lineage)
    assert at.get("graphviz_chart")[0].proto.spec.count("->") == 1
    assert at.json[0].value and v2.id in at.json[0].value
    # diff: A defaults to the parent, B to the version shown
    assert at.selectbox(key="diff_a").value == v1.id and at.selectbox(key="diff_b").value == v2.id
    at.button(key="diff").click().run()
    assert not at.exception, at.exception
    assert "words@1 -> words@2: +0 added, -6 removed, 6 unchanged" in texts(at)
    assert [m.value for m in at.metric] == ["0", "6", "6"]
    removed = at.dataframe[-1].value
    assert len(removed) == 6 and set(removed["output"]) == {"a longer answer"}


def test_lineage_dot_escapes_labels():
    from assay.app.ui.common import dot_label, lineage_dot

    assert dot_label('a"] ; evil -> x [label="') == '"a\\"] ; evil -> x [label=\\""'
    dot = lineage_dot([{"version": "v2", "ref": 'x"y@2', "operation": "filter", "records": 3, "parents": ["v1"]}])
    assert '"v1" -> "v2";' in dot and 'x\\"y@2' in dot


def test_no_unsafe_html_anywhere_in_the_app():
    app_dir = UI.parent
    offenders = [str(p) for p in app_dir.rglob("*.py") if "unsafe_allow_html" in p.read_text()]
    assert offenders == []
    # the Review page draws record text only with st.dataframe / st.code / st.text
    review = (UI / "page_review.py").read_text()
    assert "st.markdown(" not in review and "st.write(" not in review


def test_annotator_sees_only_the_annotate_page(ws, monkeypatch):
    from types import SimpleNamespace

    from assay.app.ui import auth

    monkeypatch.setattr(auth, "gate", lambda store: SimpleNamespace(name="ann", role="annotator"))
    at = run("main.py")
    assert "Datasets & versions" not in [t.value for t in at.title]
    monkeypatch.setattr(auth, "gate", lambda store: SimpleNamespace(name="boss", role="admin"))
    assert [t.value for t in run("main.py").title] == ["Datasets & versions"]
