"""Finalising a session into a version on a real store: agreement, conflicts and their resolution
first; undecided records; a session over a filter; an interrupted finalize resumed."""

from __future__ import annotations

import json

import pytest
from annotation_helpers import make_version, work_all

from assay.core import annotation as A
from assay.core.annotation import finalizing
from assay.core.errors import AssayError
from assay.core.records import Record


def test_agreement_conflicts_resolve_and_finalize(store, team, workspace):
    boss, ann1, ann2 = team
    chat = Record(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
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
        A.decide(store, ann1, s.id, A.get_item(store, boss, s.id, chat.id).record_id, "accept", revision=0,
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
    assert [r["id"] for r in rows[:1]] == [chat.id]  # kept as it was, by a selection over its segment
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


def test_an_interrupted_finalize_resumes_without_a_second_version(store, team, monkeypatch):
    boss, ann1, _ = team
    make_version(store, 2)
    s = A.create_session(store, boss, "t")
    work_all(store, ann1, s.id, lambda it: "accept")
    real_close = finalizing._close

    def die(*args):  # the process dies between committing the version and closing the session
        raise KeyboardInterrupt

    monkeypatch.setattr(finalizing, "_close", die)
    with pytest.raises(KeyboardInterrupt):
        A.finalize(store, boss, s.id)
    monkeypatch.setattr(finalizing, "_close", real_close)
    assert A.get_session(store, s.id).status == "closing"
    with pytest.raises(AssayError, match="the session is closing|did not finish; .* --resume"):
        A.finalize(store, boss, s.id)
    with pytest.raises(AssayError, match="closing: it takes no more decisions"):
        A.next_item(store, ann1, s.id)
    result = A.finalize(store, boss, s.id, resume=True)
    assert result["ref"] == "t@2" and [v["ref"] for v in store.versions("t")] == ["t@1", "t@2"]
    assert A.get_session(store, s.id).result_version == result["version"]
