#!/usr/bin/env bash
# Set up and start Assay's main job on the default workspace (./.assay, or $ASSAY_WORKSPACE).
# Until the Streamlit app lands this is the CLI demo: it needs no network.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/assay demo
echo
echo "Workspace: ${ASSAY_WORKSPACE:-.assay}. Try: .venv/bin/assay versions   (.venv/bin/assay --help for all commands)"
