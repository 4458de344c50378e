"""Users and roles on a real store: passwords hashed and checked, every admin call refused to an annotator."""

from __future__ import annotations

import sqlite3

import pytest
from annotation_helpers import PASSWORD, make_version

from assay.core import annotation as A
from assay.core.errors import AssayError


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
