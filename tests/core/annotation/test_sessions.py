"""Sessions on a real store: deleting one, and the audit flags its records carry."""

from __future__ import annotations

import sqlite3

import pytest
from annotation_helpers import make_version

from assay.core import annotation as A
from assay.core.errors import AssayError
from assay.core.records import Record


def test_delete_session_is_admin_only_and_logged(store, team, workspace):
    boss, ann1, _ = team
    make_version(store, 2)
    s = A.create_session(store, boss, "t")
    A.delete_session(store, boss, s.id)
    with pytest.raises(AssayError, match="unknown annotation session"):
        A.get_session(store, s.id)
    log = sqlite3.connect(workspace / "catalog.sqlite").execute("SELECT actor, action FROM ann_log").fetchall()
    assert ("boss", "delete_session") in log


def test_audit_flags_come_from_the_nearest_audited_ancestor(store, team):
    from assay.auditors.runner import make_auditor, run_audit

    boss, ann1, _ = team
    make_version(store, 3, extra_rows=[Record(instruction="TASK 1!", output="answer 1")])
    run_audit(store, "t", [make_auditor("exact", None)], show_progress=False)
    s = A.create_session(store, boss, "t", where="instruction <> 'task 0'")  # over an unaudited child
    flags = {}
    while (item := A.next_item(store, ann1, s.id)) is not None:
        flags[item.record["instruction"]] = A.audit_flags(store, s.id, item.record_id)
        A.decide(store, ann1, s.id, item.record_id, "accept", revision=0)
    assert flags["TASK 1!"]["exact_duplicate"] is True and flags["TASK 1!"]["version"] == "t@1"
    assert "exact_duplicate" not in flags["task 2"]  # False values are left out
