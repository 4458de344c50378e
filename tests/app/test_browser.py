"""End to end in a real browser: headless Chromium (Debian's package) driven by Playwright against
`assay app` on 127.0.0.1. Streamlit draws asynchronously, so every step waits on a locator."""

from __future__ import annotations

import re

from helpers import imported_version, write_jsonl
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from assay.core.store import Store


def _wait_app(page) -> None:
    # the app is up once a page title is drawn; a script error would show an exception box instead
    page.locator('[data-testid="stApp"]').wait_for()
    page.get_by_role("heading").first.wait_for()


def _fill(page, label: str, text: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(text)
    box.press("Enter")  # Streamlit commits a text input on Enter (or blur)


def test_import_filter_save_and_see_the_lineage(shared_app_server, page, tmp_path, shot):
    rows = [{"instruction": f"Name a fruit ({i})" if i % 3 == 0 else f"Add {i} and {i}",
             "output": "apple" if i % 3 == 0 else str(2 * i)} for i in range(30)]
    data = write_jsonl(tmp_path / "fruit.jsonl", rows)
    page.goto(shared_app_server.url)
    _wait_app(page)
    name_box = page.get_by_label("Dataset name", exact=True)
    try:  # the import expander is open on an empty workspace; otherwise open it
        name_box.wait_for(state="visible", timeout=10_000)
    except PlaywrightTimeout:
        page.get_by_text("Import a file").first.click()
    page.locator('input[type="file"]').set_input_files(str(data))
    page.get_by_text("fruit.jsonl").first.wait_for()
    _fill(page, "Dataset name", "a-fruit")
    page.get_by_role("button", name="Import", exact=True).click()
    page.get_by_text(re.compile(r"imported 30 records as a-fruit@1")).wait_for()
    shot(page, "browser-01-imported")

    page.goto(shared_app_server.url + "/review")
    _wait_app(page)
    page.get_by_text("30 of 30 records match").wait_for()
    _fill(page, "Search instruction, input and output", "FRUIT")
    page.get_by_text("10 of 30 records match").wait_for()
    shot(page, "browser-02-review-filtered")
    page.get_by_role("button", name="Save as a new version").click()
    page.get_by_text(re.compile(r"saved 10 records as a-fruit@2")).wait_for()
    shot(page, "browser-03-saved")

    page.goto(shared_app_server.url)
    _wait_app(page)
    # the newest version of the first dataset is shown, with its lineage back to the import
    page.get_by_text(re.compile(r"a-fruit@2\s+filter\s+10 records")).wait_for()
    page.get_by_text(re.compile(r"a-fruit@1\s+import\s+30 records")).wait_for()
    page.locator('[data-testid="stGraphVizChart"] svg').wait_for()
    shot(page, "browser-04-lineage")
    assert Store(shared_app_server.workspace).resolve("a-fruit@2").params["where"].count("FRUIT") == 3


XSS = ["<img src=x onerror=window.__xss=1>", "<script>window.__xss=1</script>"]


def test_xss_payload_in_a_record_is_shown_as_text(shared_app_server, page, tmp_path, shot):
    store = Store(shared_app_server.workspace)
    rows = [{"instruction": XSS[0], "input": XSS[1], "output": f"**bold** {XSS[0]} [link](javascript:alert(1))"}]
    imported_version(store, "z-xss", rows)
    page.goto(shared_app_server.url + "/review")
    _wait_app(page)
    page.get_by_text("1 of 1 records match").wait_for()
    # the record view shows the exact text, characters and all
    page.locator('[data-testid="stCode"]', has_text=XSS[0]).first.wait_for()
    page.locator('[data-testid="stCode"]', has_text=XSS[1]).first.wait_for()
    page.goto(shared_app_server.url)  # the Datasets page draws the same records (table, diff)
    _wait_app(page)
    page.get_by_text("Lineage").first.wait_for()
    shot(page, "browser-05-xss-datasets")
    page.goto(shared_app_server.url + "/review")
    _wait_app(page)
    page.locator('[data-testid="stCode"]', has_text=XSS[1]).first.wait_for()
    shot(page, "browser-06-xss-as-text")
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator('img[src="x"]').count() == 0
    assert page.locator('a[href^="javascript:"]').count() == 0


def test_job_progress_survives_a_reload(app_server, page, shot):
    page.goto(app_server.url)
    _wait_app(page)
    page.get_by_role("button", name="Run the demo").click()
    label = page.get_by_text(re.compile(r"^job id \S+$"))
    label.wait_for(timeout=60_000)
    job_id = label.inner_text().split()[-1]
    page.get_by_text(re.compile(r"Demo: Self-Instruct")).first.wait_for()
    shot(page, "browser-07-demo-job")
    page.reload()
    _wait_app(page)
    page.get_by_text(f"job id {job_id}", exact=True).wait_for()
    # the job's status is read back from the workspace, not from the old browser session
    page.get_by_text(re.compile(r"(queued|running|succeeded|failed): Demo: Self-Instruct")).wait_for()
    shot(page, "browser-08-after-reload")
    from assay.core import jobs

    assert jobs.get(Store(app_server.workspace), job_id).title.startswith("Demo: Self-Instruct")


def test_an_upload_over_the_limit_is_refused_with_a_message(small_upload_app_server, page, tmp_path, shot):
    big = write_jsonl(tmp_path / "big.jsonl", [{"instruction": "x" * 1000, "output": str(i)} for i in range(1500)])
    assert big.stat().st_size > 1024 * 1024
    page.goto(small_upload_app_server.url)
    _wait_app(page)
    page.get_by_text("at most 1 MB per file").wait_for()  # the uploader states the limit
    page.locator('input[type="file"]').set_input_files(str(big))
    page.get_by_text(re.compile(r"File must be 1(\.0)? ?MB or smaller")).wait_for()
    shot(page, "browser-09-upload-limit")
    assert Store(small_upload_app_server.workspace).versions() == []
