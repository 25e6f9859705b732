#!/usr/bin/env python3
"""Decode speed of mlx-lm on a checkpoint, timed as mlx-lm's stream_generate does.

Prompt tokens/s: prompt length over the time until the first token; decode tokens/s:
generated tokens over the time from the first token to the last. Greedy, token ids
(synthetic checkpoints have no tokenizer). Prints one JSON object.

    python benches/python/mlx_lm_decode.py --model DIR --prompt 1,2,3,4,5,6,7,8 --max-tokens 32 --runs 3
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import mlx.core as mx
from mlx_lm.generate import generate_step
from mlx_lm.utils import load_model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", default="1,2,3,4,5,6,7,8")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    args = ap.parse_args()
    mx.set_default_device(mx.cpu if args.device == "cpu" else mx.gpu)
    model, _ = load_model(Path(args.model))
    prompt = mx.array([int(t) for t in args.prompt.split(",")], dtype=mx.uint32)
    decode, prefill, peaks, tokens = [], [], [], None
    for _ in range(args.runs):
        mx.reset_peak_memory()
        tic = time.perf_counter()
        out = []
        for n, (tok, _) in enumerate(generate_step(prompt, model, max_tokens=args.max_tokens)):
            if n == 0:
                prefill.append(prompt.size / (time.perf_counter() - tic))
                tic = time.perf_counter()
            out.append(int(tok))
        decode.append(len(out) / (time.perf_counter() - tic))
        peaks.append(mx.get_peak_memory() / 1e9)
        tokens = out
    print(json.dumps({
        "mlx_version": mx.__version__,
        "mlx_lm_version": __import__("mlx_lm").__version__,
        "decode_tps_runs": decode,
        "decode_tps": statistics.median(decode),
        "prefill_tps": statistics.median(prefill),
        "peak_mem_gb": max(peaks),
        "tokens": tokens,
    }))


if __name__ == "__main__":
    main()
