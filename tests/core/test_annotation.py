"""Annotation sessions on a real store: users and roles, hand-out, decisions, revisions, agreement,
conflicts, finalising; two real processes deciding at once; a deciding process killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from assay.core import annotation as A
from assay.core.errors import AssayError
from assay.core.records import Record, rows_to_table
from assay.core.store import VersionWriter

PASSWORD = "correct horse"


def make_version(store, n: int, name: str = "t", extra_rows=()):
    rows = [Record(instruction=f"task {i}", output=f"answer {i}", metadata={"k": i}).to_row() for i in range(n)]
    with VersionWriter(store, name, "import", {}) as w:
        w.add_table(rows_to_table(rows + list(extra_rows)))
    return w.manifest


@pytest.fixture
def team(store):
    boss = A.add_user(store, A.OPERATOR, "boss", PASSWORD, "admin")
    ann1 = A.add_user(store, boss, "ann1", PASSWORD)
    ann2 = A.add_user(store, boss, "ann2", PASSWORD)
    return boss, ann1, ann2


def work_all(store, user, sid, label_of):
    """Decide every record the user is handed; returns the record ids in the order handed out."""
    seen = []
    while (item := A.next_item(store, user, sid)) is not None:
        A.decide(store, user, sid, item.record_id, label_of(item), revision=item.revision)
        seen.append(item.record_id)
    return seen


def test_passwords_are_hashed_and_checked(store, workspace):
    with pytest.raises(AssayError, match="first user of a workspace must be an admin"):
        A.add_user(store, A.OPERATOR, "ann1", PASSWORD, "annotator")
    assert not A.has_users(store)
    boss = A.add_user(store, A.OPERATOR, "boss", PASSWORD, "admin")
    assert A.has_users(store)
    with pytest.raises(AssayError, match="too short"):
        A.add_user(store, boss, "ann1", "short")
    with pytest.raises(AssayError, match="already exists"):
        A.add_user(store, boss, "boss", PASSWORD, "admin")
    stored = sqlite3.connect(workspace / "catalog.sqlite").execute("SELECT pw_hash FROM ann_users").fetchone()[0]
    assert stored.startswith("scrypt$") and PASSWORD not in stored
    assert PASSWORD.encode() not in (workspace / "catalog.sqlite").read_bytes()
    # a per-user salt: the same password hashes differently
    assert A.hash_password(PASSWORD) != A.hash_password(PASSWORD)
    assert A.authenticate(store, "boss", PASSWORD) == A.User("boss", "admin")
    assert A.authenticate(store, "boss", PASSWORD + "!") is None
    assert A.authenticate(store, "nobody", PASSWORD) is None


def test_an_annotator_can_neither_delete_nor_finalise_nor_see_others(store, team):
    boss, ann1, ann2 = team
    make_version(store, 4)
    s = A.create_session(store, boss, "t", overlap=2)
    item = A.next_item(store, ann1, s.id)
    A.decide(store, ann1, s.id, item.record_id, "accept", revision=0)
    admin_only = [
        lambda: A.finalize(store, ann1, s.id, allow_undecided=True),
        lambda: A.delete_session(store, ann1, s.id),
        lambda: A.resolve(store, ann1, s.id, item.record_id, "reject"),
        lambda: A.edit_record(store, ann1, s.id, item.record_id, output="mine"),
        lambda: A.conflicts(store, ann1, s.id),
        lambda: A.agreement(store, ann1, s.id),
        lambda: A.export_decisions(store, ann1, s.id),
        lambda: A.list_users(store, ann1),
        lambda: A.add_user(store, ann1, "ann3", PASSWORD),
        lambda: A.create_session(store, ann1, "t", name="mine"),
    ]
    for call in admin_only:
        with pytest.raises(AssayError, match="refused: ann1 is an annotator"):
            call()
    # a forged User object does not help: the role comes from the catalog
    with pytest.raises(AssayError, match="refused: ann1 is an annotator"):
        A.finalize(store, A.User("ann1", "admin"), s.id, allow_undecided=True)
    # ann2 cannot decide, or even read, a record ann2 was not handed
    with pytest.raises(AssayError, match="not in ann2's queue"):
        A.decide(store, ann2, s.id, A.next_item(store, ann1, s.id).record_id, "accept", revision=0)
    with pytest.raises(AssayError, match="not in ann2's queue"):
        A.get_item(store, ann2, s.id, A.next_item(store, ann1, s.id).record_id)
    assert list(A.status(store, ann2, s.id)["annotators"]) == ["ann2"]
    assert A.get_session(store, s.id).status == "open"
    assert A.status(store, boss, s.id)["decisions"] == 1


def test_hand_out_without_overlap_is_disjoint_and_deterministic(store, team):
    boss, ann1, ann2 = team
    make_version(store, 10, extra_rows=[Record(instruction="task 3", output="answer 3").to_row()])
    s = A.create_session(store, boss, "t", overlap=1)
    assert s.items == 10  # the duplicate row of record 3 is one item
    got1, got2 = [], []
    for _ in range(5):  # interleaved, as two people working at once
        for user, got in ((ann1, got1), (ann2, got2)):
            item = A.next_item(store, user, s.id)
            A.decide(store, user, s.id, item.record_id, "accept", revision=item.revision)
            got.append(item.seq)
    assert got1 == [0, 2, 4, 6, 8] and got2 == [1, 3, 5, 7, 9]
    assert A.next_item(store, ann1, s.id) is None and A.next_item(store, ann2, s.id) is None
    st = A.status(store, boss, s.id)
    assert st["records"]["agreed"] == 10 and st["annotators"]["ann1"]["remaining"] == 0


def test_overlap_k_gives_each_record_to_exactly_k_annotators(store, team):
    boss, ann1, ann2 = team
    ann3 = A.add_user(store, boss, "ann3", PASSWORD)
    make_version(store, 6)
    s = A.create_session(store, boss, "t", overlap=2)
    seen = {u.name: work_all(store, u, s.id, lambda it: "accept") for u in (ann1, ann2, ann3)}
    # ann1 and ann2 take every record before ann3 asks; nothing is left for a third copy
    assert len(seen["ann1"]) == len(seen["ann2"]) == 6 and seen["ann3"] == []
    rows = A.export_decisions(store, boss, s.id)
    assert len(rows) == 12 and all(sum(r["record_id"] == rid for r in rows) == 2 for rid in seen["ann1"])
    only = A.create_session(store, boss, "t", name="only ann1", annotators=["ann1"])
    with pytest.raises(AssayError, match="refused: ann2 is not an annotator of session only ann1"):
        A.next_item(store, ann2, only.id)
    assert [x.name for x in A.list_sessions(store, ann2)] == [s.name]
    with pytest.raises(AssayError, match="overlap 3 needs at least 3 annotators"):
        A.create_session(store, boss, "t", name="x", overlap=3, annotators=["ann1", "ann2"])


def test_resume_returns_the_same_record_until_it_is_decided(store, team):
    boss, ann1, _ = team
    make_version(store, 3)
    s = A.create_session(store, boss, "t")
    first = A.next_item(store, ann1, s.id)
    assert A.next_item(store, ann1, s.id).record_id == first.record_id  # a reload, a new browser
    A.decide(store, ann1, s.id, first.record_id, "reject", revision=0)
    second = A.next_item(store, ann1, s.id)
    assert second.seq == 1
    # changing one's mind replaces the decision; it never makes two
    A.decide(store, ann1, s.id, first.record_id, "accept", revision=0)
    rows = A.export_decisions(store, boss, s.id)
    assert [(r["seq"], r["label"]) for r in rows] == [(0, "accept")]


def test_a_decision_on_a_record_an_admin_changed_is_refused(store, team):
    boss, ann1, ann2 = team
    make_version(store, 3)
    s = A.create_session(store, boss, "t", overlap=2)
    seen_by_1 = A.next_item(store, ann1, s.id)
    seen_by_2 = A.next_item(store, ann2, s.id)
    A.decide(store, ann2, s.id, seen_by_2.record_id, "accept", revision=seen_by_2.revision)
    assert A.edit_record(store, boss, s.id, seen_by_1.record_id, output="corrected by the admin") == 1
    with pytest.raises(AssayError, match=r"was changed by boss .* \(you saw revision 0, it is now 1\)"):
        A.decide(store, ann1, s.id, seen_by_1.record_id, "accept", revision=seen_by_1.revision)
    # nothing was written, and the record comes back to both, with the admin's text
    again1 = A.next_item(store, ann1, s.id)
    again2 = A.next_item(store, ann2, s.id)
    assert again1.record_id == again2.record_id == seen_by_1.record_id
    assert again1.revision == 1 and again1.record["output"] == "corrected by the admin"
    assert A.export_decisions(store, boss, s.id)[0]["current"] is False
    # a decision on an older revision does not count: the record is undecided again, like the two
    # records nobody has opened
    counts = A.status(store, boss, s.id)["records"]
    assert (counts["undecided"], counts["agreed"], counts["total"], counts["complete"]) == (3, 0, 3, 0)
    A.decide(store, ann1, s.id, again1.record_id, "accept", revision=1)
    A.decide(store, ann2, s.id, again2.record_id, "accept", revision=1)
    counts = A.status(store, boss, s.id)["records"]
    assert (counts["undecided"], counts["agreed"], counts["total"], counts["complete"]) == (2, 1, 3, 1)


def test_fleiss_kappa_matches_the_textbook_example():
    # Fleiss (1971) as tabulated on Wikipedia's "Fleiss' kappa": 10 subjects, 14 raters, 5 categories
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                      [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert A.fleiss_kappa(table) == pytest.approx(0.2099, abs=1e-4)
    assert A.fleiss_kappa(np.array([[3, 0], [3, 0]])) is None  # one category only: undefined


def test_agreement_conflicts_resolve_and_finalize(store, team, workspace):
    boss, ann1, ann2 = team
    chat = Record(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]).to_row()
    source = make_version(store, 4, extra_rows=[chat])
    s = A.create_session(store, boss, "t", overlap=2, schema=A.LabelSchema(reasons=["wrong"], allow_edit=True))
    # record i: ann1 says accept, accept, reject, reject; ann2: accept, reject, reject, reject; both accept chat
    plan1 = ["accept", "accept", "reject", "reject", "accept"]
    plan2 = ["accept", "reject", "reject", "reject", "accept"]
    for user, plan in ((ann1, plan1), (ann2, plan2)):
        while (item := A.next_item(store, user, s.id)) is not None:
            label = plan[item.seq]
            edit = {"output": "answer 0, improved"} if (user is ann1 and item.seq == 0) else None
            reasons = ["wrong"] if label == "reject" else []
            A.decide(store, user, s.id, item.record_id, label, revision=item.revision, edit=edit, reasons=reasons)
    with pytest.raises(AssayError, match="chat record"):
        A.decide(store, ann1, s.id, A.get_item(store, boss, s.id, chat["id"]).record_id, "accept", revision=0,
                 edit={"output": "x"})
    agreement = A.agreement(store, boss, s.id)
    # labels: 4 of 5 agree; kappa by hand: po = 0.8, pe = 0.6*0.4 + 0.4*0.6 = 0.48, (0.8-0.48)/0.52
    assert agreement["label"]["method"] == "cohen" and agreement["label"]["items"] == 5
    assert agreement["label"]["kappa"] == pytest.approx((0.8 - 0.48) / 0.52)
    assert agreement["annotators"]["ann1"]["accept_rate"] == pytest.approx(0.6)
    assert agreement["annotators"]["ann1"]["edited"] == 1
    conflicts = A.conflicts(store, boss, s.id)
    assert [c["seq"] for c in conflicts] == [0, 1]  # 0: same label, different text; 1: accept vs reject
    with pytest.raises(AssayError, match="2 unresolved conflicts"):
        A.finalize(store, boss, s.id)
    with pytest.raises(AssayError, match="ann2 made no edit"):
        A.resolve(store, boss, s.id, conflicts[0]["record_id"], "accept", edit_of="ann2")
    A.resolve(store, boss, s.id, conflicts[0]["record_id"], "accept", edit_of="ann1")
    A.resolve(store, boss, s.id, conflicts[1]["record_id"], "reject", note="off topic")
    result = A.finalize(store, boss, s.id)
    assert result["params"]["session"] == s.id and result["parents"] == [source.id]
    assert (result["params"]["accepted"], result["params"]["rejected"], result["params"]["edited"]) == (2, 3, 1)
    manifest = store.resolve("t")
    assert manifest.operation == "annotate" and manifest.params["session"] == s.id
    rows = store.read(manifest).to_dicts()
    assert [r["id"] for r in rows[:1]] == [chat["id"]]  # kept as it was, by a selection over its segment
    edited = rows[1]
    assert (edited["instruction"], edited["output"]) == ("task 0", "answer 0, improved")
    assert edited["parent_ids"] == [conflicts[0]["record_id"]] and edited["generator"] == "annotation"
    meta = json.loads(edited["metadata"])
    assert meta["annotation"] == {"session": s.id, "editor": "ann1", "edited_from": conflicts[0]["record_id"]}
    assert meta["k"] == 0  # the original's metadata travels with the edit
    assert len(rows) == 2 and store.verify()["ok"]
    # closed: no more decisions, no second finalize
    with pytest.raises(AssayError, match="finalized: it takes no more decisions"):
        A.next_item(store, ann1, s.id)
    with pytest.raises(AssayError, match="finalised already"):
        A.finalize(store, boss, s.id)
    with pytest.raises(AssayError, match="cannot be deleted"):
        A.delete_session(store, boss, s.id)


def test_chat_records_are_edited_turn_by_turn(store, team):
    boss, ann1, _ = team
    turns = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "capital of France?"},
             {"role": "assistant", "content": "Lyon"}]
    chat = Record(messages=turns).to_row()
    other = Record(messages=[{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]).to_row()
    source = make_version(store, 0, extra_rows=[chat, other])
    s = A.create_session(store, boss, "t", schema=A.LabelSchema(allow_edit=True))
    fixed = [dict(t) for t in turns]
    fixed[2]["content"] = "Paris"
    item = A.next_item(store, ann1, s.id)
    assert item.record_id == chat["id"]
    with pytest.raises(AssayError, match="is a chat record: edit its turns as 'messages' \\(got output\\)"):
        A.decide(store, ann1, s.id, item.record_id, "accept", revision=0, edit={"output": "Paris"})
    with pytest.raises(AssayError, match="must keep their roles and order \\(system, user, assistant\\)"):
        A.decide(store, ann1, s.id, item.record_id, "accept", revision=0, edit={"messages": fixed[1:]})
    A.decide(store, ann1, s.id, item.record_id, "accept", revision=0, edit={"messages": fixed})
    assert A.export_decisions(store, boss, s.id)[0]["edit"] == {"messages": fixed}
    # an admin's edit of the other chat record: the revision goes up and the annotator sees the new text
    second = A.next_item(store, ann1, s.id)
    A.edit_record(store, boss, s.id, second.record_id,
                  messages=[{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "2+2 = 4"}])
    again = A.next_item(store, ann1, s.id)
    assert again.revision == 1 and again.record["messages"][1]["content"] == "2+2 = 4"
    A.decide(store, ann1, s.id, again.record_id, "accept", revision=1)
    result = A.finalize(store, boss, s.id)
    assert result["params"]["edited"] == 2 and result["parents"] == [source.id]
    rows = {r["parent_ids"][0]: r for r in store.read(store.resolve("t")).to_dicts()}
    edited = rows[chat["id"]]
    assert edited["messages"] == fixed and edited["generator"] == "annotation"
    # the new record's id is the hash of its new content, as an import of that content would give
    assert edited["id"] == Record(messages=fixed).id != chat["id"]
    assert rows[other["id"]]["messages"][1]["content"] == "2+2 = 4"
    assert store.verify()["ok"]


def test_finalize_refuses_undecided_unless_asked_and_sessions_over_a_filter(store, team):
    boss, ann1, _ = team
    make_version(store, 10)
    s = A.create_session(store, boss, "t", where="output LIKE '%1%' OR output LIKE '%2%'", name="some")
    assert s.items == 2 and store.load_manifest(s.version_id).operation == "filter"
    item = A.next_item(store, ann1, s.id)
    A.decide(store, ann1, s.id, item.record_id, "accept", revision=0)
    with pytest.raises(AssayError, match="1 undecided records"):
        A.finalize(store, boss, s.id)
    result = A.finalize(store, boss, s.id, allow_undecided=True, name="reviewed")
    assert result["ref"] == "reviewed@1" and result["records"] == 1 and result["params"]["undecided"] == 1
    assert store.read("reviewed")["instruction"].to_list() == ["task 1"]


def test_delete_session_is_admin_only_and_logged(store, team, workspace):
    boss, ann1, _ = team
    make_version(store, 2)
    s = A.create_session(store, boss, "t")
    A.delete_session(store, boss, s.id)
    with pytest.raises(AssayError, match="unknown annotation session"):
        A.get_session(store, s.id)
    log = sqlite3.connect(workspace / "catalog.sqlite").execute("SELECT actor, action FROM ann_log").fetchall()
    assert ("boss", "delete_session") in log


WORKER = textwrap.dedent("""
    import os, sys, time
    from assay.core.store import Store
    from assay.core import annotation as A
    workspace, name, session, start_file, label = sys.argv[1:6]
    store = Store(workspace)
    user = A.authenticate(store, name, "correct horse")
    while not os.path.exists(start_file):  # both processes begin together
        time.sleep(0.001)
    while (item := A.next_item(store, user, session)) is not None:
        A.decide(store, user, session, item.record_id, label, revision=item.revision)
        print(item.record_id, flush=True)  # printed only after the decision committed
""")


def _worker(workspace, user, sid, start, label):
    return subprocess.Popen([sys.executable, "-c", WORKER, str(workspace), user, sid, str(start), label],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_processes_deciding_the_same_records_lose_nothing(store, team, workspace, tmp_path):
    boss, ann1, ann2 = team
    make_version(store, 1000)
    s = A.create_session(store, boss, "t", overlap=2)
    start = tmp_path / "go"
    procs = [_worker(workspace, "ann1", s.id, start, "accept"), _worker(workspace, "ann2", s.id, start, "reject")]
    start.touch()
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    decided = [o[0].split() for o in outs]
    assert len(decided[0]) == len(decided[1]) == 1000
    rows = A.export_decisions(store, boss, s.id)
    assert len(rows) == 2000
    by_record = {}
    for r in rows:
        by_record.setdefault(r["record_id"], {})[r["annotator"]] = r["label"]
    assert len(by_record) == 1000 and all(v == {"ann1": "accept", "ann2": "reject"} for v in by_record.values())
    assert A.status(store, boss, s.id)["records"]["conflict"] == 1000


def test_a_deciding_process_killed_with_sigkill_loses_no_decision(store, team, workspace, tmp_path):
    boss, ann1, _ = team
    make_version(store, 200)
    s = A.create_session(store, boss, "t")
    start = tmp_path / "go"
    start.touch()
    proc = _worker(workspace, "ann1", s.id, start, "accept")
    confirmed = []
    for line in proc.stdout:
        confirmed.append(line.strip())
        if len(confirmed) == 40:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    decided = {r["record_id"] for r in A.export_decisions(store, boss, s.id)}
    assert set(confirmed) <= decided  # every decision confirmed before the kill is there
    # restarting resumes where it stopped: no record twice, none skipped
    again = _worker(workspace, "ann1", s.id, start, "accept")
    rest = again.communicate(timeout=300)[0].split()
    assert again.returncode == 0
    assert not set(rest) & decided and len(decided) + len(rest) == 200
    assert A.status(store, boss, s.id)["records"]["agreed"] == 200


def test_records_held_by_someone_who_left_can_be_released(store, team):
    boss, ann1, ann2 = team
    make_version(store, 2)
    s = A.create_session(store, boss, "t")
    held = A.next_item(store, ann1, s.id)  # ann1 opens record 1 and walks away
    other = A.next_item(store, ann2, s.id)
    A.decide(store, ann2, s.id, other.record_id, "accept", revision=0)
    assert A.next_item(store, ann2, s.id) is None  # overlap 1: record 1 is ann1's
    with pytest.raises(AssayError, match="refused: ann2 is an annotator"):
        A.release_claims(store, ann2, s.id, "ann1")
    assert A.release_claims(store, boss, s.id, "ann1") == 1
    assert A.next_item(store, ann2, s.id).record_id == held.record_id
    with pytest.raises(AssayError, match="not in ann1's queue"):
        A.decide(store, ann1, s.id, held.record_id, "accept", revision=0)


def test_an_interrupted_finalize_resumes_without_a_second_version(store, team, monkeypatch):
    boss, ann1, _ = team
    make_version(store, 2)
    s = A.create_session(store, boss, "t")
    work_all(store, ann1, s.id, lambda it: "accept")
    real_close = A._close

    def die(*args):  # the process dies between committing the version and closing the session
        raise KeyboardInterrupt

    monkeypatch.setattr(A, "_close", die)
    with pytest.raises(KeyboardInterrupt):
        A.finalize(store, boss, s.id)
    monkeypatch.setattr(A, "_close", real_close)
    assert A.get_session(store, s.id).status == "closing"
    with pytest.raises(AssayError, match="the session is closing|did not finish; .* --resume"):
        A.finalize(store, boss, s.id)
    with pytest.raises(AssayError, match="closing: it takes no more decisions"):
        A.next_item(store, ann1, s.id)
    result = A.finalize(store, boss, s.id, resume=True)
    assert result["ref"] == "t@2" and [v["ref"] for v in store.versions("t")] == ["t@1", "t@2"]
    assert A.get_session(store, s.id).result_version == result["version"]


def test_audit_flags_come_from_the_nearest_audited_ancestor(store, team):
    from assay.auditors.runner import make_auditor, run_audit

    boss, ann1, _ = team
    make_version(store, 3, extra_rows=[Record(instruction="TASK 1!", output="answer 1").to_row()])
    run_audit(store, "t", [make_auditor("exact", None)], show_progress=False)
    s = A.create_session(store, boss, "t", where="instruction <> 'task 0'")  # over an unaudited child
    flags = {}
    while (item := A.next_item(store, ann1, s.id)) is not None:
        flags[item.record["instruction"]] = A.audit_flags(store, s.id, item.record_id)
        A.decide(store, ann1, s.id, item.record_id, "accept", revision=0)
    assert flags["TASK 1!"]["exact_duplicate"] is True and flags["TASK 1!"]["version"] == "t@1"
    assert "exact_duplicate" not in flags["task 2"]  # False values are left out
