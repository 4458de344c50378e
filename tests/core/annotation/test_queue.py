"""The hand-out queue and decisions on a real store: hand-out, overlap, resume, revisions, chat edits,
released claims; two real processes deciding at once; a deciding process killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from annotation_helpers import PASSWORD, make_version, work_all

from assay.core import annotation as A
from assay.core.errors import AssayError
from assay.core.records import Record


def test_hand_out_without_overlap_is_disjoint_and_deterministic(store, team):
    boss, ann1, ann2 = team
    make_version(store, 10, extra_rows=[Record(instruction="task 3", output="answer 3")])
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


def test_chat_records_are_edited_turn_by_turn(store, team):
    boss, ann1, _ = team
    turns = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "capital of France?"},
             {"role": "assistant", "content": "Lyon"}]
    chat = Record(messages=turns)
    other = Record(messages=[{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}])
    source = make_version(store, 0, extra_rows=[chat, other])
    s = A.create_session(store, boss, "t", schema=A.LabelSchema(allow_edit=True))
    fixed = [dict(t) for t in turns]
    fixed[2]["content"] = "Paris"
    item = A.next_item(store, ann1, s.id)
    assert item.record_id == chat.id
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
    edited = rows[chat.id]
    assert edited["messages"] == fixed and edited["generator"] == "annotation"
    # the new record's id is the hash of its new content, as an import of that content would give
    assert edited["id"] == Record(messages=fixed).id != chat.id
    assert rows[other.id]["messages"][1]["content"] == "2+2 = 4"
    assert store.verify()["ok"]


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
