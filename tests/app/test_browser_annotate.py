"""Annotation end to end in a real browser: headless Chromium (Debian's package) driven by Playwright
against `assay app` on 127.0.0.1. Two annotators work one session with overlap 2 in two browser
contexts; the app server is killed with SIGKILL mid-session and restarted; the admin sees the kappa
and the conflicts, resolves one and finalises; the new version holds exactly the expected records."""

from __future__ import annotations

import os
import re
import signal

import pytest

from assay.core import annotation as A
from assay.core.records import Record, rows_to_table
from assay.core.store import Store, VersionWriter

PASSWORD = "correct horse"
# ann1 accepts all but record 5; ann2 also rejects record 1: one conflict, kappa by hand
# po = 5/6, pe = 5/6*4/6 + 1/6*2/6 = 22/36, kappa = (30/36 - 22/36) / (14/36) = 8/14
PLAN = {"ann1": ["accept"] * 5 + ["reject"], "ann2": ["accept", "reject", "accept", "accept", "accept", "reject"]}


RECORDS = [Record(instruction=f"Say {i}", output=f"<b>{i}</b>") for i in range(6)]


def _login(browser, url: str, name: str, path: str = ""):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(url + path)
    page.get_by_label("User name", exact=True).fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_text(f"Logged in as {name}").wait_for()
    return context, page


def _idle(page) -> None:
    """Wait for the script run to end: a click during a run can be dropped by Streamlit."""
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for()


def _work(page, name: str, records: range, shot, *, keyboard: bool) -> None:
    """Decide records in order, each after checking the page shows it (its number and its text)."""
    for i in records:
        page.get_by_text(f"Record {i + 1} of 6", exact=True).wait_for()
        page.locator('[data-testid="stCode"]', has_text=f"Say {i}").first.wait_for()
        # the buttons of *this* record (their keys hold its id), not the last record's still on screen,
        # and the script run finished: a key pressed before that goes to a button that is gone
        page.locator(f".st-key-accept-{RECORDS[i].id}-0").wait_for()
        _idle(page)
        label = PLAN[name][i]
        if keyboard:
            page.locator("body").press("a" if label == "accept" else "x")  # the buttons' shortcuts
        else:
            # the button's accessible name carries its shortcut hint too ("Accept A")
            page.get_by_role("button", name=re.compile("^" + label.capitalize())).click()
        nxt = f"Record {i + 2} of 6" if i < 5 else "Your queue is done"
        try:
            page.get_by_text(re.compile("^" + re.escape(nxt))).wait_for()
        except Exception:
            shot(page, f"annotate-failed-{name}-{i}")
            raise


@pytest.mark.slow
def test_two_annotators_a_killed_server_and_the_admin_finalising(app_server, browser, tmp_path, shot):
    store = Store(app_server.workspace)
    with VersionWriter(store, "t", "import", {}) as w:
        w.add_table(rows_to_table([r.to_row() for r in RECORDS]))
    boss = A.add_user(store, A.OPERATOR, "boss", PASSWORD, "admin")
    A.add_user(store, boss, "ann1", PASSWORD)
    A.add_user(store, boss, "ann2", PASSWORD)
    session = A.create_session(store, boss, "t", name="review", overlap=2, annotators=["ann1", "ann2"])

    # a logged-out browser sees only the login form, on every page
    anon = browser.new_context()
    page = anon.new_page()
    page.goto(app_server.url + "/annotate")
    page.get_by_role("button", name="Log in").wait_for()
    assert page.get_by_role("button", name="Accept").count() == 0 and page.get_by_text("Say 0").count() == 0
    shot(page, "annotate-01-login")
    anon.close()

    ctx1, p1 = _login(browser, app_server.url, "ann1")
    ctx2, p2 = _login(browser, app_server.url, "ann2")
    _work(p1, "ann1", range(0, 3), shot, keyboard=True)
    _work(p2, "ann2", range(0, 3), shot, keyboard=False)
    shot(p2, "annotate-02-annotator")
    ctx1.close()
    ctx2.close()

    # kill the server outright, mid-session, and start a new one on the same workspace
    before = A.export_decisions(store, boss, session.id)
    assert len(before) == 6
    os.killpg(app_server.proc.pid, signal.SIGKILL)
    app_server.proc.wait()
    server = type(app_server)(app_server.workspace, tmp_path / "app2.log")
    try:
        server.wait_ready()
        assert A.export_decisions(store, boss, session.id) == before
        ctx1, p1 = _login(browser, server.url, "ann1")
        ctx2, p2 = _login(browser, server.url, "ann2")
        _work(p1, "ann1", range(3, 6), shot, keyboard=True)  # resumes at record 4
        _work(p2, "ann2", range(3, 6), shot, keyboard=False)
        ctx1.close()
        ctx2.close()

        ctx, admin = _login(browser, server.url, "boss")
        admin.locator('[data-testid="stSidebarNav"] a', has_text="Annotate").click()  # admins land on Datasets
        try:
            admin.get_by_text("Cohen's kappa").wait_for()
        except Exception:
            shot(admin, "annotate-failed-admin")
            raise
        admin.get_by_text(f"{8 / 14:.3f}", exact=True).wait_for()
        admin.locator('[data-testid="stTable"]', has_text="ann2").wait_for()  # progress per annotator
        shot(admin, "annotate-03-admin-sessions")
        _idle(admin)
        admin.locator('[data-testid="stRadio"] label', has_text="Conflicts").click()
        admin.get_by_text("1 unresolved conflicts").wait_for()
        admin.get_by_text("ann1: accept", exact=True).wait_for()
        admin.get_by_text("ann2: reject", exact=True).wait_for()
        shot(admin, "annotate-04-conflicts")
        _idle(admin)
        admin.get_by_role("button", name="Accept", exact=True).click()
        admin.get_by_text("Resolved record 2: accept").wait_for()
        _idle(admin)
        admin.locator('[data-testid="stRadio"] label', has_text="Sessions").click()
        admin.get_by_text("I understand the session then closes to new decisions").click()
        _idle(admin)
        admin.get_by_role("button", name="Finalise", exact=True).click()
        admin.get_by_text("Finalised: t@2 holds 5 records").wait_for()
        shot(admin, "annotate-05-finalised")
        ctx.close()
    finally:
        server.stop()

    result = store.resolve("t@2")
    assert result.operation == "annotate" and result.params["session"] == session.id
    assert store.read(result)["instruction"].to_list() == [f"Say {i}" for i in range(5)]
    assert len(A.export_decisions(store, boss, session.id)) == 12
