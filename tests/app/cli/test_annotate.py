"""`assay annotate ...` in subprocesses, as a user runs it, against a real workspace."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import write_jsonl

from assay.core import annotation as A
from assay.core.store import Store

ROWS = [{"instruction": f"Task {i}", "input": "", "output": f"answer {i}"} for i in range(6)]


def assay(workspace, *args, stdin: str | None = None, password: str | None = None):
    env = {**os.environ, "ASSAY_WORKSPACE": str(workspace)}
    env.pop("ASSAY_PASSWORD", None)
    if password is not None:
        env["ASSAY_PASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "assay.app.cli", *args], input=stdin or "", capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.mark.slow
def test_users_sessions_status_export_finalize(cli, workspace, tmp_path):
    cli.json("import", str(write_jsonl(tmp_path / "t.jsonl", ROWS)), "--name", "t")
    # the first user must be an admin; passwords come from stdin here and are never stored
    first = assay(workspace, "annotate", "users", "add", "ann1", "--password-stdin", "--json", stdin="password1\n")
    assert first.returncode == 1 and "must be an admin" in json.loads(first.stdout)["error"]
    for name, role in (("boss", "admin"), ("ann1", "annotator"), ("ann2", "annotator")):
        proc = assay(workspace, "annotate", "users", "add", name, "--role", role, "--password-stdin", "--json",
                     stdin="password1\n")
        assert json.loads(proc.stdout) == {"name": name, "role": role}
    users = cli.json("annotate", "users", "list")["users"]
    assert [(u["name"], u["role"]) for u in users] == [("ann1", "annotator"), ("ann2", "annotator"), ("boss", "admin")]
    assert "password1" not in json.dumps(users)

    created = cli.json("annotate", "create", "t", "--name", "review", "--overlap", "2", "--annotators", "ann1,ann2",
                       "--reasons", "wrong,unsafe", "--allow-edit")
    assert created["items"] == 6 and created["schema"] == {"reasons": ["wrong", "unsafe"], "categories": [],
                                                           "allow_edit": True}
    # the annotators work through the library (the app's path); record 0 gets a conflict
    store = Store(workspace)
    ann1, ann2 = A.authenticate(store, "ann1", "password1"), A.authenticate(store, "ann2", "password1")
    for user in (ann1, ann2):
        while (item := A.next_item(store, user, "review")) is not None:
            label = "reject" if (user is ann2 and item.seq == 0) or item.seq == 5 else "accept"
            A.decide(store, user, "review", item.record_id, label, revision=item.revision)

    status = cli.json("annotate", "status", "review")
    assert status["records"] == {"undecided": 0, "agreed": 5, "conflict": 1, "resolved": 0, "total": 6,
                                 "complete": 6}
    assert status["annotators"]["ann1"] == {"decided": 6, "open": 0, "available": 0, "remaining": 0}
    assert status["agreement"]["label"]["method"] == "cohen"
    assert [s["name"] for s in cli.json("annotate", "status")["sessions"]] == ["review"]
    assert "kappa" in cli("annotate", "status", "review").stdout

    # an annotator acting through the CLI sees only their own line and cannot finalise
    own = json.loads(assay(workspace, "annotate", "--user", "ann2", "status", "review", "--json",
                           password="password1").stdout)
    assert list(own["annotators"]) == ["ann2"] and "records" not in own
    refused = assay(workspace, "annotate", "--user", "ann2", "finalize", "review", "--json", password="password1")
    assert refused.returncode == 1
    assert json.loads(refused.stdout) == {"error": "refused: ann2 is an annotator; only an admin may finalise sessions"}
    wrong = assay(workspace, "annotate", "--user", "boss", "finalize", "review", password="nope-nope")
    assert wrong.returncode == 1 and "wrong user name or password" in wrong.stderr

    out = tmp_path / "decisions.jsonl"
    exported = cli.json("annotate", "export", "review", str(out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert exported["decisions"] == len(lines) == 12
    assert {(r["annotator"], r["label"]) for r in lines if r["seq"] == 0} == {("ann1", "accept"), ("ann2", "reject")}
    assert cli.json("annotate", "export", "review", str(tmp_path / "d.csv"))["decisions"] == 12

    assert cli.json("annotate", "release", "review", "ann1") == {"released": 0}
    blocked = cli("annotate", "finalize", "review", "--json", check=False)
    assert blocked.returncode == 1 and "1 unresolved conflicts" in json.loads(blocked.stdout)["error"]
    conflict = A.conflicts(store, A.OPERATOR, "review")[0]
    A.resolve(store, A.OPERATOR, "review", conflict["record_id"], "accept")
    final = cli.json("annotate", "finalize", "review", "--name", "t-reviewed")
    assert final["ref"] == "t-reviewed@1" and final["records"] == 5 and final["params"]["session"] == created["id"]
    exported_rows = cli.json("export", "t-reviewed", str(tmp_path / "final.jsonl"))
    assert exported_rows["records"] == 5
    kept = [json.loads(x)["instruction"] for x in (tmp_path / "final.jsonl").read_text().splitlines()]
    assert kept == [f"Task {i}" for i in range(5)]
    lineage = cli.json("lineage", "t-reviewed")["lineage"]
    assert [v["operation"] for v in lineage] == ["annotate", "import"]
    assert lineage[0]["params"]["session"] == created["id"]


def test_bad_input_is_one_line_and_exit_1(cli, workspace, tmp_path):
    cli.json("import", str(write_jsonl(tmp_path / "t.jsonl", ROWS)), "--name", "t")
    proc = cli("annotate", "status", "nope", check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == "error: unknown annotation session 'nope'"
    proc = cli("annotate", "create", "t", "--annotators", "ghost", check=False)
    assert proc.returncode == 1 and "unknown annotators: ghost" in proc.stderr
    proc = cli("annotate", "create", "nope@3", check=False)
    assert proc.returncode == 1 and "unknown version 'nope@3'" in proc.stderr
    proc = cli("annotate", "export", "x", str(tmp_path / "d.txt"), check=False)
    assert proc.returncode == 1
    assert cli.json("annotate", "status")["sessions"] == []
