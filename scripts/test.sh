#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up, then pytest. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p test-artifacts
# Lint first: it takes a second and names the line, where a failing test would take minutes.
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
