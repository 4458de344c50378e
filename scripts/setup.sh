#!/usr/bin/env bash
# Installs everything Assay needs into ./.venv on a fresh Debian machine with Python 3.11+.
# Idempotent: a second run only checks what is there. Used by start.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Assay needs Python 3.11 or newer as '$PY' (set PYTHON=...)" >&2
  exit 1
fi

# Debian's Python needs python3-venv (ensurepip) to make a virtual environment.
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv --help >/dev/null 2>&1 || ! "$PY" -c 'import ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
      echo "error: '$PY -m venv' is unavailable; install python3-venv" >&2
      exit 1
    fi
  fi
  "$PY" -m venv .venv
fi

# Debian's chromium for the browser tests (Playwright drives /usr/bin/chromium; no browser download).
if [ -z "${ASSAY_NO_BROWSER:-}" ] && ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "warning: chromium is not installed (apt-get install chromium); the browser tests will fail" >&2
  fi
fi

# Type checkers and editors resolve `assay.*` through build/typing/assay -> the repository root
# (the root *is* the package; pyproject's [tool.pyright] extraPaths and [tool.mypy] mypy_path name it).
mkdir -p build/typing && ln -sfn ../.. build/typing/assay

# A stamp of the dependency spec: skip pip when nothing changed since the last install.
stamp=".venv/.assay-installed"
want="$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: 2.13.0 is the CPU build; an unpinned torch pulls a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
echo "$want" > "$stamp"
