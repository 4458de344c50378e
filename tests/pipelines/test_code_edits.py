"""Code edits from git history (pipelines/code_edits.py): diff parsing on a known patch, mining a
repository the test builds (a merge, a binary, vendored, generated, new, oversize and whitespace-only
changes), runs against tests/fault_server.py and the real embedded server, this project's own
history, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from fault_server import FaultServer

from assay.core.errors import AssayError
from assay.core.llm import LLMConfig, ParseError
from assay.core.llm.journal import list_llm_runs, run_failures, run_record
from assay.core.llm.server import EMBEDDED_MODEL, serve
from assay.pipelines.code_edits import CodeEditsConfig, check_repo, language_of, mine, parse_diff, parse_instruction
from assay.pipelines.generate import generate

ROOT = Path(__file__).resolve().parents[2]  # this project's own repository

PATCH = """diff --git a/src/app.py b/src/app.py
index 1111111..2222222 100644
--- a/src/app.py
+++ b/src/app.py
@@ -1,4 +1,4 @@
 import os
-def greet(name):
+def greet(name: str) -> str:
     return "hi " + name
 
@@ -10,2 +10,3 @@ def main():
     greet("x")
+    return 0
\\ No newline at end of file
diff --git a/logo.png b/logo.png
index 3333333..4444444 100644
Binary files a/logo.png and b/logo.png differ
diff --git a/new.py b/new.py
new file mode 100644
index 0000000..5555555
--- /dev/null
+++ b/new.py
@@ -0,0 +1 @@
+x = 1
"""  # noqa: W293 (the blank context line of a unified diff is one space)


def test_parse_diff_on_a_known_patch():
    app, logo, new = parse_diff(PATCH)
    assert (app.path, app.old_path, app.new_path, app.binary) == ("src/app.py", "src/app.py", "src/app.py", False)
    h0, h1 = app.hunks
    assert h0["header"] == "@@ -1,4 +1,4 @@" and (h0["added"], h0["removed"]) == (1, 1)
    assert h0["before"] == 'import os\ndef greet(name):\n    return "hi " + name\n'
    assert h0["after"] == 'import os\ndef greet(name: str) -> str:\n    return "hi " + name\n'
    assert h1["after"] == '    greet("x")\n    return 0' and h1["before"] == '    greet("x")'
    assert h1["diff"].endswith("\\ No newline at end of file")  # kept in the diff, not in the code
    assert logo.binary and logo.path == "logo.png" and not logo.hunks
    assert (new.old_path, new.new_path, new.path) == (None, "new.py", "new.py")


def test_languages_and_instruction_parsing():
    assert [language_of(p) for p in ("a/b.py", "x.tsx", "Makefile", "lib.rs", "notes.xyz", "nb.ipynb")] == [
        "python", "typescript", "makefile", "rust", None, None]
    assert parse_instruction("Instruction: Add type hints to greet.") == "Add type hints to greet."
    assert parse_instruction('"Add type hints."') == "Add type hints."
    assert parse_instruction('{"answer": "Add type hints."}') == "Add type hints."
    for bad in ("", "Instruction:", '{"answer": "Add ty'):
        with pytest.raises(ParseError):
            parse_instruction(bad)


# ---- a repository built by the test ------------------------------------------------------------
GIT_ENV = {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "T",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}


def sh(repo: Path, *args: str, **env: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV, **env}).stdout


def write(repo: Path, rel: str, text: str | bytes) -> None:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


def commit(repo: Path, message: str, merge: str | None = None) -> str:
    # one minute apart: git log orders by commit time, so the walk order is fixed
    n = int(sh(repo, "rev-list", "--all", "--count"))
    when = {"GIT_AUTHOR_DATE": f"2024-01-01T00:{n:02d}:00Z", "GIT_COMMITTER_DATE": f"2024-01-01T00:{n:02d}:00Z"}
    if merge:
        sh(repo, "merge", "-q", "--no-ff", "-m", message, merge, **when)
    else:
        sh(repo, "add", "-A")
        sh(repo, "commit", "-q", "-m", message, **when)
    return sh(repo, "rev-parse", "HEAD").strip()


APP = "import os\n\n\ndef greet(name):\n    return 'hi ' + name\n\n\ndef main():\n    print(greet('x'))\n"
UTIL = "def add(a, b):\n    return a + b\n"
BIG = "".join(f"VALUE_{i} = {i}\n" for i in range(60))


@pytest.fixture
def repo(tmp_path) -> Path:
    """main: c1 adds files (new files: skipped); c2 edits app.py (one edit; vendored, generated and
    binary changes skipped) [its message forces a 500 at the fault server]; c3 makes util.py
    whitespace-only and big.py oversize; a feature branch edits util.py [its message forces a
    truncated JSON reply] and is merged with --no-ff (the merge is skipped, the branch commit kept)."""
    r = tmp_path / "proj"
    r.mkdir()
    sh(r, "init", "-q", "-b", "main")
    write(r, "src/app.py", APP)
    write(r, "src/util.py", UTIL)
    write(r, "src/big.py", BIG)
    write(r, "vendor/lib/left.js", "function pad(s) { return s; }\n")
    write(r, "package-lock.json", '{"lockfileVersion": 1}\n')
    write(r, "logo.png", bytes(range(256)))
    commit(r, "Initial import")
    write(r, "src/app.py", APP.replace("def greet(name):", "def greet(name: str) -> str:"))
    write(r, "vendor/lib/left.js", "function pad(s) { return ' ' + s; }\n")
    write(r, "package-lock.json", '{"lockfileVersion": 2}\n')
    write(r, "logo.png", bytes(range(255, -1, -1)))
    commit(r, "Add type hints to greet [[always:500]]")
    write(r, "src/util.py", UTIL.replace("a + b", "a +  b"))
    write(r, "src/big.py", BIG.replace("VALUE", "CONST"))
    commit(r, "Rename VALUE constants; tidy util")
    sh(r, "checkout", "-q", "-b", "feature")
    write(r, "src/util.py", UTIL.replace("a + b", "a +  b").replace("def add(a, b):", "def add(a, b=0):"))
    commit(r, "Give add a default [[always:bad_json]]")
    sh(r, "checkout", "-q", "main")
    write(r, "src/app.py", APP.replace("def greet(name):", "def greet(name: str) -> str:")
          .replace("print(greet('x'))", "print(greet('world'))"))
    commit(r, "Greet the world")
    commit(r, "Merge feature", merge="feature")
    return r


def test_mining_the_built_repository(repo):
    seeds, skipped, walked = mine(check_repo(str(repo)), CodeEditsConfig())
    assert walked == 6
    assert Counter(s["reason"] for s in skipped) == {
        "merge": 1, "new_file": 3, "vendored": 2, "generated": 2, "binary": 2, "whitespace_only": 1, "oversize": 1}
    by_subject = {s["subject"]: s for s in seeds}
    assert set(by_subject) == {"Add type hints to greet [[always:500]]", "Give add a default [[always:bad_json]]",
                               "Greet the world"}
    hints = by_subject["Add type hints to greet [[always:500]]"]
    assert (hints["file"], hints["language"], hints["added"], hints["removed"]) == ("src/app.py", "python", 1, 1)
    assert "def greet(name):" in hints["before"] and "def greet(name: str) -> str:" in hints["after"]
    assert "-def greet(name):" in hints["diff"] and "+def greet(name: str) -> str:" in hints["diff"]
    # the oversize bound and the languages filter come from the config
    seeds2, skipped2, _ = mine(str(repo), CodeEditsConfig(max_changed_lines=200, max_hunk_lines=500,
                                                          languages=["javascript"]))
    assert seeds2 == [] and all(s["reason"] == "language" for s in skipped2 if (s["file"] or "").endswith(".py"))
    seeds3, _, _ = mine(str(repo), CodeEditsConfig(max_changed_lines=200, max_hunk_lines=500))
    assert any(s["file"] == "src/big.py" and s["removed"] == 60 for s in seeds3)


def fault_llm(srv: FaultServer, **kw) -> LLMConfig:
    return LLMConfig(**{**dict(base_url=srv.base_url, model=srv.model, temperature=0, seed=1, timeout_s=5,
                               max_retries=0, backoff_s=0.01, concurrency=2, cache=False), **kw})


def test_code_edits_against_the_fault_server(store, repo):
    with FaultServer(fault_rate=0.0) as srv:
        report = generate(store, "code-edits", "edits", {"repo": str(repo), "max_commits": 10}, fault_llm(srv),
                          "ce-faults")
        sent = srv.chat_requests()
    rec = run_record(store, "ce-faults")
    assert report["requested"] == rec["requested"] == rec["ok"] + rec["failed"] == sent == 3
    assert report["failed"] == rec["failed"] == 2 == report["filtered"]["instruction_failed"]
    assert Counter(f["error_kind"] for f in report["failures"]) == {"http": 1, "unparsable": 1}
    journal = {f["key"]: f for f in run_failures(store, "ce-faults")}
    for f in report["failures"]:
        assert f["raw"] and f["raw"] == journal[f["key"]]["raw"]  # the error body / the truncated reply
    # every mined hunk ends as a record or one drop: skipped by the miner, or dropped after its request
    assert report["records"] + len(report["dropped"]) == report["details"]["edits"] + len(report["details"]["skipped"])
    assert report["details"]["edits"] == 3
    assert {k: v for k, v in report["filtered"].items() if k != "instruction_failed"} == {
        "merge": 1, "new_file": 3, "vendored": 2, "generated": 2, "binary": 2, "whitespace_only": 1, "oversize": 1}

    manifest = store.resolve(report["version"])
    assert manifest.operation == "generate:code-edits" and manifest.params["commits"] == 6
    (r,) = store.read(manifest).to_dicts()
    meta = json.loads(r["metadata"])
    assert meta["subject"] == "Greet the world" and meta["file"] == "src/app.py" and meta["language"] == "python"
    assert "print(greet('x'))" in r["input"] and "print(greet('world'))" in r["output"]
    assert "+    print(greet('world'))" in meta["diff"] and meta["commit"] == sh(repo, "rev-parse", "main^1").strip()
    assert r["instruction"].startswith("echo:") and "Greet the world" in r["instruction"]
    assert (r["generator"], r["template"], r["source"], r["model"]) == ("code-edits", "code_edits_instruction",
                                                                        "ce-faults", srv.model)


def test_not_a_repository_and_nothing_to_mine_fail_clearly(store, tmp_path, repo):
    llm = LLMConfig(base_url="http://127.0.0.1:9/v1", model="m")  # nothing listens: a request would fail
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(AssayError, match="plain: not a git repository"):
        generate(store, "code-edits", "e", {"repo": str(plain)}, llm)
    with pytest.raises(AssayError, match="missing: no such folder"):
        generate(store, "code-edits", "e", {"repo": str(tmp_path / "missing")}, llm)
    with pytest.raises(AssayError, match="no repository given"):
        generate(store, "code-edits", "e", {}, llm)
    empty = tmp_path / "empty"
    empty.mkdir()
    sh(empty, "init", "-q")
    with pytest.raises(AssayError, match="git log"):  # no commits yet: git's own words
        generate(store, "code-edits", "e", {"repo": str(empty)}, llm)
    with pytest.raises(AssayError, match=r"no edits in the last 1 commit\(s\) of HEAD .*merge 1"):
        generate(store, "code-edits", "e", {"repo": str(repo), "max_commits": 1}, llm)
    with pytest.raises(AssayError, match="unknown language"):
        generate(store, "code-edits", "e", {"repo": str(repo), "languages": ["klingon"]}, llm)
    assert store.versions() == [] and list_llm_runs(store) == []


def test_this_projects_own_history(store):
    cfg = CodeEditsConfig(max_commits=15)  # enough history that some commit edits a file (not only adds)
    seeds, skipped, walked = mine(check_repo(str(ROOT)), cfg)
    shas = sh(ROOT, "log", "-n15", "--format=%H").split()
    assert walked == len(shas) and seeds
    for s in seeds:
        assert s["commit"] in shas and s["language"] and s["before"] != s["after"]
        assert s["added"] + s["removed"] <= cfg.max_changed_lines
        # the hunk is really in that commit's diff (the whole diff: limited to one path, git cannot see
        # that a moved-and-edited file was renamed and shows it as all new)
        assert s["hunk"] in sh(ROOT, "show", "--format=", "-U3", "-M", s["commit"])
    with FaultServer(fault_rate=0.0) as srv:
        report = generate(store, "code-edits", "own", {"repo": str(ROOT), "max_commits": 15, "max_edits": 3},
                          fault_llm(srv), "ce-own")
    assert (report["records"], report["requested"], report["failed"]) == (3, 3, 0)
    assert report["filtered"]["enough"] == len(seeds) - 3


def test_code_edits_against_the_real_server(store, repo):
    with serve(n_threads=1, n_ctx=2048) as srv:
        llm = LLMConfig(base_url=srv.base_url, temperature=0, seed=1, max_tokens=32, timeout_s=120)
        report = generate(store, "code-edits", "edits", {"repo": str(repo), "max_commits": 2}, llm, "ce-real")
    assert report["details"]["edits"] == 1 and report["requested"] == 1  # "Greet the world" (+ the merge)
    assert report["records"] + len(report["dropped"]) == 1 + len(report["details"]["skipped"])
    for r in store.read(report["version"]).to_dicts():
        assert r["model"] == EMBEDDED_MODEL and r["instruction"].strip()
        assert json.loads(r["sampling_params"]) == {"temperature": 0, "top_p": 1.0, "max_tokens": 32, "seed": 1}
        assert "greet('world')" in r["output"]


def test_cli_generate_code_edits(cli, store, repo):
    with FaultServer(fault_rate=0.0) as srv:
        out = cli.json("generate", "code-edits", "--repo", str(repo), "--max-commits", "3", "--name", "edits",
                       "--base-url", srv.base_url, "--model", srv.model)
    assert out["generator"] == "code-edits" and out["ref"] == "edits@1" and out["details"]["commits"] == 3
    assert out["requested"] == out["records"] + out["failed"]
