"""The embedded llama.cpp server's start: a busy port, and a failed start that reports the server's log."""

from __future__ import annotations

import socket

import pytest

from assay.core.errors import AssayError
from assay.core.llm.server import serve


def test_server_refuses_a_busy_port_and_reports_a_failed_start(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(AssayError, match=f"port {s.getsockname()[1]} .* already in use"):
            serve(port=s.getsockname()[1])
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"this is not a GGUF file")
    with pytest.raises(AssayError) as err:
        serve(model_path=str(bogus), n_threads=1, log_path=str(tmp_path / "server.log"))
    message = str(err.value)
    assert "exited with code" in message and "last lines of its log" in message
    assert "gguf" in message.lower().split("last lines of its log", 1)[1]  # the server's own words
