"""`assay runs` and `assay llm serve`, as a user runs them."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from fault_server import FaultServer

from assay.core.llm import LLMClient, LLMConfig, Request, json_parser
from assay.core.llm.server import free_port


def test_runs_show_failures_lists_raw_replies(cli, store):
    with FaultServer(seed=1, fault_rate=0.0) as srv:
        cfg = LLMConfig(base_url=srv.base_url, model=srv.model, temperature=0, seed=1, max_retries=0, timeout_s=2)
        requests = [Request("good", "hello"), Request("bad", "[[always:bad_json]] x", parse=json_parser("answer"))]
        LLMClient(cfg).run_batch("cli-run", requests, store)
    runs = cli.json("runs")["runs"]
    assert [(r["run_id"], r["requested"], r["ok"], r["failed"]) for r in runs] == [("cli-run", 2, 1, 1)]
    shown = cli.json("runs", "show", "cli-run", "--failures")
    assert [f["key"] for f in shown["failures"]] == ["bad"]
    assert shown["failures"][0]["raw"] and shown["failures"][0]["error_kind"] == "unparsable"
    missing = cli("runs", "show", "nope", check=False)
    assert missing.returncode == 1 and "unknown run 'nope'" in missing.stderr


def test_llm_serve_answers_until_interrupted(workspace):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "assay.app.cli", "llm", "serve", "--port", str(port),
                             "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "ASSAY_WORKSPACE": str(workspace)})
    try:
        line = proc.stdout.readline()  # printed once the server answers
        assert f"http://127.0.0.1:{port}/v1" in line, line + proc.stderr.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as resp:
            models = json.load(resp)
        assert models["data"], models
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    time.sleep(0.5)
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
        raise AssertionError("the server still answers after Ctrl-C")
    except OSError:
        pass
