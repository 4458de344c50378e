#!/usr/bin/env bash
# The peers of Assay's MinHash auditor for bench/scale_peers.py (issue 13, "Peers, side by side"),
# installed into the bench's own virtual environment, bench/.venv-peers (git-ignored), never into
# the project's: none of them is an Assay dependency.
#
#   bash bench/peers_env.sh            # create (or update) bench/.venv-peers
#   PYTHON=python3.11 bash bench/peers_env.sh
#
# Pinned, as resolved from PyPI on 2026-12-03 with Python 3.11:
# - datatrove 0.10.1: its MinHash dedup pipeline (signature, buckets, cluster, filter steps) on the
#   local executor. Its base requirements do not cover that pipeline: it also imports xxhash (the
#   default hash function; datatrove's [processing] extra bounds it <4), tokenizers (imported by its
#   JSONL writer's module chain; also [processing]) and orjson (the JSONL reader, from the [io]
#   extra). Those three are installed alone rather than the whole [processing]/[io] extras (fasttext,
#   trafilatura, nltk, warcio, ...), which the MinHash steps never import.
# - text-dedup 0.4.0: `python -m text_dedup.minhash`. Installed with its declared requirements, which
#   include pyspark (491 MB installed, for its Spark variant) and unisim (+ onnxruntime, usearch), unused
#   by the single-machine MinHash run; it pins urllib3<=2.0.
# - datasketch 2.0.0: the reference pipeline in bench/minhash_reference.py.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-peers"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet \
    "datatrove==0.10.1" "xxhash==3.8.2" "tokenizers==0.23.3" "orjson==3.13.0" \
    "text-dedup==0.4.0" \
    "datasketch==2.0.0"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("datatrove", "text-dedup", "datasketch", "xxhash", "tokenizers", "orjson", "datasets", "numpy"):
    print(f"{name} {md.version(name)}")
PY
