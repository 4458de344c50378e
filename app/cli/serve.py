"""`assay app`: the browser app on this workspace."""

from __future__ import annotations

from typing import Annotated

import typer

from assay.app.cli.common import current_workspace, out
from assay.app.serve import serve

app = typer.Typer()


@app.command("app")
def app_(port: Annotated[int, typer.Option(help="port to serve on")] = 8501,
         host: Annotated[str, typer.Option(
             help="address to listen on (keep it on loopback unless you mean it)")] = "127.0.0.1",
         max_upload_mb: Annotated[int, typer.Option(
             "--max-upload-mb", help="largest file the app accepts for import")] = 200) -> None:
    """Start the browser app (Streamlit) on this workspace until Ctrl-C."""

    workspace = current_workspace()
    out.print(f"Assay app on http://{host}:{port}  (workspace {workspace}; Ctrl-C stops it)")
    serve(workspace, port, host, max_upload_mb)
