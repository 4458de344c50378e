"""Small pieces the benchmark scripts share."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def write_json(path: str | None, figures: Any) -> None:
    """`--json-out PATH`: write the figures there (folders made as needed); nothing when PATH is None."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(figures, indent=2, default=str) + "\n")
        print(f"figures written to {path}")


def run_child(script: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """`python SCRIPT --child ARGS...` in a fresh process (so each step's peak memory and imports are
    its own); its last line of output, as JSON. A failed child ends the bench with its stderr."""
    proc = subprocess.run([sys.executable, script, "--child", *args], capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"{Path(script).name} {' '.join(args)[:200]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_mb() -> float:
    """This process's peak resident memory in MiB. VmHWM, not ru_maxrss: ru_maxrss survives execve,
    so a fresh child would report its parent's size."""
    with open("/proc/self/status") as fh:
        return int(next(line for line in fh if line.startswith("VmHWM")).split()[1]) / 1024


def fresh_dir(path: str | Path) -> Path:
    """`path` emptied (or made): a bench's working folder, nothing left from an earlier run."""
    folder = Path(path)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder
