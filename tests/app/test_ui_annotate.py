"""The annotation page and the login gate under Streamlit's AppTest, on a real workspace."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from assay.core import annotation as A
from assay.core.records import Record, rows_to_table
from assay.core.store import Store, VersionWriter

UI = Path(__file__).resolve().parents[2] / "app" / "ui"
PASSWORD = "correct horse"


@pytest.fixture
def ws(tmp_path, monkeypatch):
    workspace = tmp_path / "ws"
    monkeypatch.setenv("ASSAY_WORKSPACE", str(workspace))
    store = Store(workspace)
    rows = [Record(instruction=f"Say {i}", output=f"<b>{i}</b>").to_row() for i in range(4)]
    with VersionWriter(store, "t", "import", {}) as w:
        w.add_table(rows_to_table(rows))
    boss = A.add_user(store, A.OPERATOR, "boss", PASSWORD, "admin")
    for name in ("ann1", "ann2"):
        A.add_user(store, boss, name, PASSWORD)
    return store


def page_as(user: str | None) -> AppTest:
    at = AppTest.from_file(str(UI / "page_annotate.py"), default_timeout=60)
    if user:
        at.session_state["assay_user"] = user
    return at.run()


def click(at: AppTest, label: str) -> AppTest:
    [button] = [b for b in at.button if b.label == label]
    return button.click().run()


def texts(at: AppTest) -> list[str]:
    return [c.value for c in at.code] + [t.value for t in at.text]


def test_a_logged_out_browser_sees_only_the_login(ws):
    at = AppTest.from_file(str(UI / "main.py"), default_timeout=60).run()
    assert not at.exception
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    assert [b.label for b in at.button] == ["Log in"]
    assert not [t for t in at.title if t.value == "Annotate"] and not at.code and not at.dataframe
    at.text_input(key="login_name").input("ann1")
    at.text_input(key="login_password").input("wrong password")
    at = at.button[0].click().run()
    assert [e.value for e in at.error] == ["Wrong user name or password."]
    assert "assay_user" not in at.session_state
    at.text_input(key="login_name").input("ann1")
    at.text_input(key="login_password").input(PASSWORD)
    at = at.button[0].click().run()
    assert not at.exception
    assert at.session_state["assay_user"] == "ann1"
    # an annotator gets the annotation page and nothing else (no session yet)
    assert [t.value for t in at.title] == ["Annotate"]  # not the Datasets landing page, nor any other
    assert "No open annotation session for you yet." in [i.value for i in at.info]
    assert not at.radio  # and no admin views


def test_open_mode_needs_no_login(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAY_WORKSPACE", str(tmp_path / "empty"))
    at = page_as(None)
    assert not at.exception and [t.value for t in at.title] == ["Annotate"]
    assert at.radio(key="ann_view").value == "Sessions"  # the local operator has the admin views


def test_annotator_decides_with_the_keyboard_buttons_and_resumes(ws):
    s = A.create_session(ws, A.OPERATOR, "t", overlap=2, schema=A.LabelSchema(reasons=["wrong"]))
    at = page_as("ann1")
    assert not at.exception
    assert not at.radio  # no admin views for an annotator
    assert "Finalise" not in [b.label for b in at.button]
    assert "<b>0</b>" in texts(at)  # record text is drawn as text, never as HTML
    accept = [b for b in at.button if b.label == "Accept"][0]
    assert accept.proto.shortcut.lower() == "a"
    at = click(at, "Accept")
    assert "<b>1</b>" in texts(at)
    at.pills(key=next(p.key for p in at.pills)).set_value(["wrong"])
    at = click(at, "Reject")
    decisions = {(d["seq"], d["label"], tuple(d["reasons"])) for d in A.export_decisions(ws, A.OPERATOR, s.id)}
    assert decisions == {(0, "accept", ()), (1, "reject", ("wrong",))}
    # a new browser session (a closed tab, a reload) resumes at the same record
    again = page_as("ann1")
    assert "<b>2</b>" in texts(again) and "<b>1</b>" not in texts(again)


def test_a_decision_on_a_record_the_admin_changed_is_refused_in_the_page(ws):
    s = A.create_session(ws, A.OPERATOR, "t")
    at = page_as("ann1")
    rid = A.next_item(ws, A.authenticate(ws, "ann1", PASSWORD), s.id).record_id
    A.edit_record(ws, A.authenticate(ws, "boss", PASSWORD), s.id, rid, output="fixed by boss")
    at = click(at, "Accept")
    assert [e.value for e in at.error] == ["Not saved:"]
    assert any("was changed by boss" in c for c in texts(at))
    assert A.export_decisions(ws, A.OPERATOR, s.id) == []
    assert "fixed by boss" in texts(at)  # the changed record is shown again
    at = click(at, "Accept")
    assert [(d["label"], d["revision"]) for d in A.export_decisions(ws, A.OPERATOR, s.id)] == [("accept", 1)]


def test_a_chat_record_is_edited_turn_by_turn_in_the_page(ws):
    turns = [{"role": "user", "content": "capital of France?"}, {"role": "assistant", "content": "<i>Lyon</i>"}]
    chat = Record(messages=turns).to_row()
    with VersionWriter(ws, "c", "import", {}) as w:
        w.add_table(rows_to_table([chat]))
    s = A.create_session(ws, A.OPERATOR, "c", schema=A.LabelSchema(allow_edit=True))
    at = page_as("ann1")
    assert not at.exception
    assert "<i>Lyon</i>" in texts(at)  # the turn is drawn as text
    areas = {a.label: a for a in at.text_area}
    assert list(areas) == ["Turn 1: user", "Turn 2: assistant"]
    areas["Turn 2: assistant"].input("Paris")
    at = click(at.run(), "Accept")
    assert not at.exception
    [decision] = A.export_decisions(ws, A.OPERATOR, s.id)
    assert decision["edit"] == {"messages": [turns[0], {"role": "assistant", "content": "Paris"}]}


def test_admin_sees_agreement_resolves_and_finalises(ws):
    s = A.create_session(ws, A.OPERATOR, "t", overlap=2)
    for name, plan in (("ann1", ["accept", "accept", "reject", "accept"]),
                       ("ann2", ["accept", "reject", "reject", "accept"])):
        user = A.authenticate(ws, name, PASSWORD)
        while (item := A.next_item(ws, user, s.id)) is not None:
            A.decide(ws, user, s.id, item.record_id, plan[item.seq], revision=item.revision)
    at = page_as("boss")
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Conflicts"] == "1" and metrics["Agreed"] == "3"
    assert metrics["Cohen's kappa"] == "0.500"  # po 0.75, pe 0.5
    table = at.table[0].value
    assert list(table["annotator"]) == ["ann1", "ann2"] and list(table["accept rate"]) == ["75%", "50%"]
    at.radio(key="ann_view").set_value("Conflicts")
    at = at.run()
    assert "ann1: accept" in texts(at) and "ann2: reject" in texts(at)
    at = click(at, "Reject")
    assert any("Resolved record 2" in s.value for s in at.success)
    assert A.status(ws, A.OPERATOR, s.id)["records"]["resolved"] == 1
    at.radio(key="ann_view").set_value("Sessions")
    at = at.run()
    finalise = [b for b in at.button if b.label == "Finalise"][0]
    assert finalise.disabled  # asks for confirmation first
    at.checkbox(key=f"fin-sure-{s.id}").check()
    at = at.run()
    at = click(at, "Finalise")
    assert any("Finalised: t@2 holds 2 records" in s.value for s in at.success), [e.value for e in at.error]
    assert ws.read("t")["instruction"].to_list() == ["Say 0", "Say 3"]
    assert ws.resolve("t").params["session"] == s.id


def test_open_mode_creates_a_session_and_the_first_user_turns_on_logins(tmp_path, monkeypatch):
    workspace = tmp_path / "ws"
    monkeypatch.setenv("ASSAY_WORKSPACE", str(workspace))
    store = Store(workspace)
    with VersionWriter(store, "t", "import", {}) as w:
        w.add_table(rows_to_table([Record(instruction=f"Say {i}", output=str(i)).to_row() for i in range(5)]))
    at = page_as(None)
    at.radio(key="ann_view").set_value("New session")
    at = at.run()
    at.text_input(key="ann_new_name").input("first pass")
    at.text_input(key="ann_new_where").input("output <> '3'")
    at.text_input(key="ann_new_reasons").input("wrong, unsafe")
    at = at.run()
    at = click(at, "Create session")
    assert not at.exception and any("Created session first pass with 4 records" in m.value for m in at.success)
    [session] = A.list_sessions(store, A.OPERATOR)
    assert session.schema.reasons == ["wrong", "unsafe"] and session.overlap == 1
    # the local operator annotates too, until the workspace has users
    at.radio(key="ann_view").set_value("Annotate")
    at = click(at.run(), "Accept")
    assert [d["annotator"] for d in A.export_decisions(store, A.OPERATOR, session.id)] == ["local"]
    at.radio(key="ann_view").set_value("Users")
    at = at.run()
    at.text_input(key="ann_user_name").input("boss")
    at.text_input(key="ann_user_password").input(PASSWORD)
    at = click(at, "Add user")
    assert not at.exception, at.exception
    assert A.has_users(store) and A.get_user(store, "boss") == A.User("boss", "admin")
