"""Embedding throughput of the default model (all-MiniLM-L6-v2) on a GPU against this machine's CPU.

Part of bench/gpu_check.sh (issue 17, item 2); two halves because the GPU box has torch and
transformers but not sentence-transformers, and a device call carries at most 64 MiB:

    .venv/bin/python bench/gpu_embed.py prepare    # here: .device/minilm (the model's weights saved
        # in float16, 45 MB; the float32 file is 87 MB), the texts, and the float32 sentence-transformers
        # embeddings of the first --reference texts on this CPU, with their records/s (the CPU figure)
    python3 bench/gpu_embed.py run --out DIR        # there: records/s per dtype and batch size

The GPU side does what sentence-transformers' `encode` does for this model: texts sorted by length,
tokenized to at most max_seq_length (256) word pieces, mean pooling over the attention mask, L2
normalisation. Its vectors are compared (cosine, mean and min) with the CPU reference, so a wrong
pooling or a dtype that loses quality shows; the float32 row also carries the float16 rounding of the
weights, which is why the docs report the cosine, not equality.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

DEVICE_DIR = Path(__file__).resolve().parents[1] / ".device"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "instructions" / "codealpaca_new.json"


def prepare(args) -> None:
    import numpy as np
    import polars as pl
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from assay.auditors.embeddings import resolve_model
    from assay.core.records import rows_to_table, with_text

    path = resolve_model(None)
    out = DEVICE_DIR / "minilm"
    out.mkdir(parents=True, exist_ok=True)
    AutoModel.from_pretrained(path, torch_dtype=torch.float16).save_pretrained(out)
    AutoTokenizer.from_pretrained(path).save_pretrained(out)
    # the auditors' default `text` view, built by the project's own `with_text`
    rows = [{"instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"], "messages": None}
            for r in json.loads(SHARED.read_text(encoding="utf-8"))]
    texts = with_text(pl.from_arrow(rows_to_table(rows)))["text"].to_list()
    (DEVICE_DIR / "embed_texts.json").write_text(json.dumps(texts), encoding="utf-8")
    st = SentenceTransformer(path, device="cpu")
    reference = texts[: args.reference]
    st.encode(reference[:64], batch_size=64)  # warm-up
    start = time.perf_counter()
    vectors = st.encode(reference, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    seconds = time.perf_counter() - start
    np.save(DEVICE_DIR / "embed_reference.npy", vectors.astype(np.float32))
    cpu = {"records": len(reference), "seconds": round(seconds, 2), "records_per_s": round(len(reference) / seconds, 1),
           "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
           "max_seq_length": st.max_seq_length}
    (DEVICE_DIR / "embed_cpu.json").write_text(json.dumps(cpu), encoding="utf-8")
    print("prepared", out, cpu)


def encode(model, tokenizer, texts: list[str], batch_size: int, max_len: int, device: str):
    import torch

    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # length-sorted, as sentence-transformers
    out = [None] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in index], padding=True, truncation=True, max_length=max_len,
                              return_tensors="pt").to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu()
            for row, i in enumerate(index):
                out[i] = pooled[row]
    return torch.stack(out)


def run(args) -> None:
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    device = args.device
    texts = json.loads((DEVICE_DIR / "embed_texts.json").read_text(encoding="utf-8"))[: args.records]
    reference = torch.from_numpy(np.load(DEVICE_DIR / "embed_reference.npy"))
    cpu = json.loads((DEVICE_DIR / "embed_cpu.json").read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(DEVICE_DIR / "minilm")
    rows = []
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        model = AutoModel.from_pretrained(DEVICE_DIR / "minilm", torch_dtype=dtype).to(device).eval()
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            encode(model, tokenizer, texts[: batch_size * 2], batch_size, cpu["max_seq_length"], device)  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            vectors = encode(model, tokenizer, texts, batch_size, cpu["max_seq_length"], device)
            seconds = time.perf_counter() - start
            cos = (vectors[: len(reference)] * reference[: len(vectors)]).sum(-1)
            row = {"dtype": dtype_name, "batch_size": batch_size, "records": len(texts),
                   "seconds": round(seconds, 3), "records_per_s": round(len(texts) / seconds, 1),
                   "x_cpu": round(len(texts) / seconds / cpu["records_per_s"], 1),
                   "cosine_mean": round(float(cos.mean()), 5), "cosine_min": round(float(cos.min()), 5),
                   "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else None}
            rows.append(row)
            print(json.dumps(row), flush=True)
        del model
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor()
    result = {"gpu": gpu, "torch": torch.__version__, "cpu_reference": cpu, "rows": rows}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "embed.json").write_text(json.dumps(result, indent=1), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["prepare", "run"])
    ap.add_argument("--reference", type=int, default=1000, help="prepare: texts embedded on this CPU as reference")
    ap.add_argument("--records", type=int, default=4535, help="run: texts embedded per measurement")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtypes", default="float32,float16,bfloat16")
    ap.add_argument("--batch-sizes", default="64,128,256,512")
    ap.add_argument("--out", default="/tmp/gpu-embed")
    args = ap.parse_args()
    prepare(args) if args.mode == "prepare" else run(args)


if __name__ == "__main__":
    main()
