"""Serving speed: requests per second and time to first token of `hydrahead serve` (transformers' OpenAI-
compatible server) for a teacher and its hybrids, with one client and with several concurrent clients.

Every model gets its own server process (`hydrahead serve DIR`), all started before timing and idle when not
in use; each round times every model in turn (rotated order), so the models share the machine's state. A
request is a streamed chat completion of a --prompt-tokens prompt (essay text, a different one each request)
with greedy decoding of --max-tokens tokens (EOS ignored: every request writes all of them).

  TTFT   time from sending the request to the first chunk with generated text (includes the queue: the
         server runs one request at a time, so with 4 clients a request waits for those before it)
  RPS    requests completed per second of wall time, over --requests requests per client
  in-process  the same request as `model.generate` in this process (prefill, then --max-tokens tokens), no
         server: what the model itself costs, against the one-client latency (the rest is the server's)

Usage (the models of docs/benchmarks.md "Serving": the demo's teacher and its HydraHead 7:1, README "Serving"):
  python bench/serving.py --models teacher/ hybrid/ --prompt-tokens 256,2048 --out serving.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from hydrahead.errors import ServingError
from hydrahead.serving import free_port, stop_server, wait_until_up
from hydrahead.utils.io import write_json


def start_server(model: str, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "hydrahead", "serve", model, "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc, timeout=300)
    except ServingError as err:
        stop_server(proc)
        raise SystemExit(f"{err}: run `hydrahead serve {model}` to see why") from err
    return proc, url


@functools.lru_cache
def tokenizer_of(model: str):
    from hydrahead.models.loading import load_tokenizer

    return load_tokenizer(model)


def prompts(model: str, tokens: int, count: int) -> list[str]:
    """`count` different essay texts of `tokens` tokens under `model`'s tokenizer."""
    from hydrahead.needles import essay_sentences

    tokenizer = tokenizer_of(model)
    texts = []
    for seed in range(count):
        ids: list[int] = []
        for sentence in essay_sentences(4096, seed):
            ids += tokenizer(" " + sentence, add_special_tokens=False)["input_ids"]
            if len(ids) >= tokens:
                break
        texts.append(tokenizer.decode(ids[:tokens]))
    return texts


def request(url: str, model: str, prompt: str, max_tokens: int) -> tuple[float, float, int]:
    """(seconds to the first generated text, seconds in all, chunks with text) of one streamed chat completion."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "generation_config": json.dumps(
                {"max_new_tokens": max_tokens, "do_sample": False, "eos_token_id": None, "min_new_tokens": max_tokens})}
    start = time.perf_counter()
    first, chunks = None, 0
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise SystemExit(f"server error: {event['error']}")
            if event["choices"] and event["choices"][0].get("delta", {}).get("content"):
                chunks += 1
                first = first if first is not None else time.perf_counter() - start
    return first if first is not None else float("nan"), time.perf_counter() - start, chunks


def in_process(model: str, texts: dict[int, str], max_tokens: int, repeats: int = 3) -> dict[int, tuple[float, float]]:
    """Per prompt length: (seconds of the prefill alone, seconds of the whole generate) for its text under `model`,
    medians; the model loaded once."""
    import torch

    from hydrahead.models.loading import load_model

    net, tokenizer = load_model(model, dtype="float32"), tokenizer_of(model)
    out = {}
    for length, text in texts.items():
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
        prefill, whole = [], []
        with torch.no_grad():
            for _ in range(repeats + 1):  # the first is a warm-up
                start = time.perf_counter()
                net(ids, use_cache=True, logits_to_keep=1)
                prefill.append(time.perf_counter() - start)
                start = time.perf_counter()
                net.generate(ids, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False)
                whole.append(time.perf_counter() - start)
        out[length] = statistics.median(prefill[1:]), statistics.median(whole[1:])
    return out


def run_clients(url: str, model: str, texts: list[str], clients: int, max_tokens: int) -> dict:
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda t: request(url, model, t, max_tokens), texts))
    wall = time.perf_counter() - start
    return {"rps": len(texts) / wall, "ttft_s": statistics.median(r[0] for r in results),
            "latency_s": statistics.median(r[1] for r in results), "chunks": statistics.median(r[2] for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="checkpoint directories (first: the reference)")
    parser.add_argument("--prompt-tokens", default="256,2048", help="comma list of prompt lengths in tokens")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens generated per request")
    parser.add_argument("--clients", default="1,4", help="comma list of concurrent client counts")
    parser.add_argument("--requests", type=int, default=4, help="requests per client per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats (medians reported)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of each server")
    parser.add_argument("--out", type=Path, help="JSON file for the results")
    args = parser.parse_args()
    lengths = [int(x) for x in args.prompt_tokens.split(",")]
    clients = [int(x) for x in args.clients.split(",")]

    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.platform(), "cpus": os.cpu_count(),
            "load_before": os.getloadavg(), "args": {k: str(v) for k, v in vars(args).items()}}
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    runs: dict[str, list[dict]] = {}
    try:
        for m in args.models:
            servers[m] = start_server(m, args.threads)
        for model, (_, url) in servers.items():  # warm-up: first-call costs stay out of the figures
            for length in lengths:
                request(url, model, prompts(model, length, 1)[0], args.max_tokens)
        for rnd in range(args.rounds):
            order = args.models[rnd % len(args.models):] + args.models[:rnd % len(args.models)]
            for length in lengths:
                for count in clients:
                    for model in order:
                        texts = prompts(model, length, count * args.requests)
                        result = run_clients(servers[model][1], model, texts, count, args.max_tokens)
                        runs.setdefault(f"{model}|{length}|{count}", []).append(result)
                        print(f"round {rnd} {model} {length} tokens {count} client(s): "
                              f"{result['rps']:.2f} req/s, TTFT {1000 * result['ttft_s']:.0f} ms", flush=True)
    finally:
        for proc, _ in servers.values():
            stop_server(proc)

    import torch

    torch.set_num_threads(args.threads)
    direct = {m: in_process(m, {n: prompts(m, n, 1)[0] for n in lengths}, args.max_tokens) for m in args.models}
    reference = args.models[0]
    rows = []
    for key, results in runs.items():
        model, length, count = key.split("|")
        base = runs[f"{reference}|{length}|{count}"]
        rows.append({"model": model, "prompt_tokens": int(length), "clients": int(count),
                     "rps": statistics.median(r["rps"] for r in results),
                     "ttft_ms": 1000 * statistics.median(r["ttft_s"] for r in results),
                     "rps_vs_reference": statistics.median(r["rps"] / b["rps"] for r, b in zip(results, base)),
                     "ttft_vs_reference": statistics.median(b["ttft_s"] / r["ttft_s"] for r, b in zip(results, base)),
                     "chunks": statistics.median(r["chunks"] for r in results), "rounds": len(results),
                     "latency_ms": 1000 * statistics.median(r["latency_s"] for r in results),
                     "in_process_prefill_ms": 1000 * direct[model][int(length)][0],
                     "in_process_generate_ms": 1000 * direct[model][int(length)][1]})
    print("\n| model | prompt | clients | req/s | TTFT ms | req/s vs first | TTFT vs first (above 1: sooner) | "
          "latency ms | in-process prefill / generate ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (r["prompt_tokens"], r["clients"], args.models.index(r["model"]))):
        print(f"| {r['model']} | {r['prompt_tokens']} | {r['clients']} | {r['rps']:.2f} | {r['ttft_ms']:.0f} | "
              f"{r['rps_vs_reference']:.2f}x | {r['ttft_vs_reference']:.2f}x | {r['latency_ms']:.0f} | "
              f"{r['in_process_prefill_ms']:.0f} / {r['in_process_generate_ms']:.0f} |")
    if args.out:
        write_json(args.out, {"meta": meta, "rows": rows})


if __name__ == "__main__":
    main()
