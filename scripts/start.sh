#!/usr/bin/env bash
# Set up and start Assay: the Streamlit app on the default workspace (./.assay, or $ASSAY_WORKSPACE),
# at http://127.0.0.1:8501 (pass --port P / --host H to change it). Needs no network.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/assay app "$@"
