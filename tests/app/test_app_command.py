"""`assay app --port P` serves the app on that port (a real process, a real HTTP request)."""

from __future__ import annotations

import urllib.request


def test_assay_app_serves_on_the_given_port(app_server):
    with urllib.request.urlopen(app_server.url + "/", timeout=10) as resp:
        assert resp.status == 200
        assert b"<html" in resp.read().lower()
    with urllib.request.urlopen(app_server.url + "/_stcore/health", timeout=10) as resp:
        assert resp.status == 200
    log = app_server.log_path.read_text()
    assert f"http://127.0.0.1:{app_server.port}" in log and str(app_server.workspace) in log


def test_launcher_keeps_security_settings_on():
    from assay.app.serve import command, environment

    cmd = command(8123)
    flags = dict(zip(cmd[5::2], cmd[6::2]))
    assert flags["--server.enableXsrfProtection"] == "true"
    assert flags["--browser.gatherUsageStats"] == "false"
    assert flags["--server.address"] == "127.0.0.1" and flags["--server.port"] == "8123"
    assert flags["--server.maxUploadSize"] == "200"
    assert environment("ws")["ASSAY_UPLOAD_LIMIT_MB"] == "200"
