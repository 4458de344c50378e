"""`assay app`: run the Streamlit app (app/ui/main.py) on one workspace.

The server runs in the foreground as `python -m streamlit run`, with settings given as flags so that
no user or project config can loosen them: headless (no browser opened), no usage statistics sent,
XSRF protection on, an upload size limit the Datasets page states, and loopback by default.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MAIN = Path(__file__).resolve().parent / "ui" / "main.py"
DEFAULT_UPLOAD_MB = 200


def command(port: int, host: str = "127.0.0.1", upload_mb: int = DEFAULT_UPLOAD_MB) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(MAIN),
            "--server.port", str(port), "--server.address", host,
            "--server.headless", "true",
            "--browser.gatherUsageStats", "false",
            "--server.enableXsrfProtection", "true",
            "--server.enableCORS", "true",
            "--server.maxUploadSize", str(upload_mb),
            "--server.fileWatcherType", "none",  # an installed app does not reload on edits
            "--global.developmentMode", "false",
            "--client.toolbarMode", "minimal",  # no "Deploy" button: this app runs where it is
            "--theme.base", "light"]


def environment(workspace: str, upload_mb: int = DEFAULT_UPLOAD_MB) -> dict[str, str]:
    return {**os.environ, "ASSAY_WORKSPACE": os.path.abspath(workspace) if "://" not in workspace else workspace,
            "ASSAY_UPLOAD_LIMIT_MB": str(upload_mb),
            # belt and braces: no telemetry even if a config file turns it on
            "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}


def serve(workspace: str, port: int = 8501, host: str = "127.0.0.1", upload_mb: int = DEFAULT_UPLOAD_MB):
    """Become the Streamlit server (exec, not a child process: a signal to `assay app` reaches the
    server itself, and nothing is left running when it is stopped). Does not return."""
    cmd = command(port, host, upload_mb)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, cmd, environment(workspace, upload_mb))
