#!/usr/bin/env python3
"""Greedy-decode reference from mlx-lm for zmlx fidelity tests.

Loads a checkpoint directory with mlx-lm (model only: synthetic checkpoints have no
tokenizer), decodes each prompt greedily with mlx-lm's own ``generate_step`` (KV
cache, prefill then one token a step, argmax sampler), and writes:

- a JSON report: generated ids per prompt, top-1/top-2 ids and logit margins of every
  decode step, a margin summary, versions and timings;
- the logits of every decode step as float32 in a safetensors file (one tensor per
  prompt, ``prompt{i}`` of shape ``[steps, vocab]``), unless ``--no-logits``; with
  ``--logits-json`` they are also put in the JSON as lists (small vocabularies only).

Step ``t``'s logits are those the ``t``-th generated token was chosen from (step 0:
the last prompt position). They are captured by a pass-through logits processor,
so mlx-lm computes exactly what it computes without this script.

Example (from the repository root)::

    .venv/bin/python tests/reference/mlx_lm_reference.py \\
        --model target/zmlx-cache/qwen3_moe-tiny-l4-bf16-mlx-seed0 \\
        --prompt 1,2,3,4 --prompt 100,7 --max-tokens 200 --out /tmp/ref.json
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx_lm.generate import generate_step
from mlx_lm.utils import load_model

DEFAULT_PROMPTS = [[1, 2, 3, 4, 5, 6, 7, 8], [42], [7, 300, 11, 5]]


def parse_prompt(text):
    try:
        ids = [int(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"prompt must be comma-separated ids: {e}")
    if not ids:
        raise argparse.ArgumentTypeError("empty prompt")
    return ids


def margin_summary(margins, tops=None):
    if not margins:
        return {}
    a = np.sort(np.asarray(margins, dtype=np.float64))
    out = {}
    if tops is not None:
        # Margin relative to the top logit: one bf16 ulp there is 2^-8..2^-7 of it,
        # so a relative margin under ~2^-6 is a tie a rounding difference can flip.
        rel = np.asarray(margins, dtype=np.float64) / np.maximum(np.abs(np.asarray(tops, dtype=np.float64)), 1e-30)
        out["relative_min"] = float(rel.min())
        out["relative_below_2^-6"] = int((rel < 2.0**-6).sum())
        out["relative_below_2^-4"] = int((rel < 2.0**-4).sum())
    return out | {
        "count": int(a.size),
        "min": float(a[0]),
        "p01": float(np.quantile(a, 0.01)),
        "p05": float(np.quantile(a, 0.05)),
        "median": float(np.median(a)),
        "mean": float(a.mean()),
        "below_0.01": int((a < 0.01).sum()),
        "below_0.1": int((a < 0.1).sum()),
        "below_0.5": int((a < 0.5).sum()),
    }


def decode(model, prompt, max_tokens):
    captured = []

    def capture(tokens, logits):
        # Pass-through: keeps a reference to the logits mlx-lm samples from.
        captured.append(logits)
        return logits

    ids = []
    t0 = time.perf_counter()
    t_first = None
    for tok, _logprobs in generate_step(
        mx.array(prompt, dtype=mx.uint32),
        model,
        max_tokens=max_tokens,
        sampler=lambda lp: mx.argmax(lp, axis=-1),
        logits_processors=[capture],
    ):
        if t_first is None:
            t_first = time.perf_counter()
        ids.append(int(tok))
    t1 = time.perf_counter()
    # generate_step computes one step ahead; keep the steps that produced a token.
    steps = captured[: len(ids)]
    logits = np.stack([np.array(l.astype(mx.float32)).reshape(-1) for l in steps]) if steps else np.zeros((0, 0), np.float32)
    top = np.argsort(-logits, axis=-1, kind="stable")[:, :2] if len(ids) else np.zeros((0, 2), np.int64)
    rows = np.arange(len(ids))
    margins = (logits[rows, top[:, 0]] - logits[rows, top[:, 1]]).tolist() if len(ids) else []
    top1 = logits[rows, top[:, 0]].tolist() if len(ids) else []
    decode_s = (t1 - t_first) if t_first is not None else 0.0
    return {
        "prompt": prompt,
        "generated": ids,
        "top2": top.tolist(),
        "margins": margins,
        "argmax_matches_token": bool(all(int(top[i, 0]) == ids[i] or logits[i, top[i, 0]] == logits[i, ids[i]] for i in range(len(ids)))),
        "prefill_and_first_token_s": (t_first - t0) if t_first is not None else None,
        "decode_tokens_per_s": ((len(ids) - 1) / decode_s) if decode_s > 0 and len(ids) > 1 else None,
        "top1_logit": top1,
        "distinct_generated": len(set(ids)),
        "margin_summary": margin_summary(margins, top1),
    }, logits


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="checkpoint directory (config.json + model*.safetensors)")
    ap.add_argument("--prompt", action="append", type=parse_prompt, help="comma-separated token ids; repeat for several prompts")
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--out", type=Path, required=True, help="JSON report path")
    ap.add_argument("--logits-out", type=Path, help="logits file (.safetensors); default: <out stem>.logits.safetensors")
    ap.add_argument("--no-logits", action="store_true", help="do not write the logits file")
    ap.add_argument("--logits-json", action="store_true", help="also put every step's logits in the JSON")
    args = ap.parse_args()

    prompts = args.prompt or DEFAULT_PROMPTS
    t0 = time.perf_counter()
    model, config = load_model(args.model)
    load_s = time.perf_counter() - t0
    vocab = config["vocab_size"]
    for p in prompts:
        bad = [t for t in p if t < 0 or t >= vocab]
        if bad:
            sys.exit(f"prompt ids {bad} are outside the vocabulary (size {vocab})")

    results, logits_by_prompt = [], {}
    for i, p in enumerate(prompts):
        r, logits = decode(model, p, args.max_tokens)
        if args.logits_json:
            r["logits"] = logits.tolist()
        results.append(r)
        logits_by_prompt[f"prompt{i}"] = logits

    report = {
        "mlx_version": mx.__version__,
        "mlx_lm_version": __import__("mlx_lm").__version__,
        "device": str(mx.default_device()),
        "model_dir": str(args.model),
        "model_type": config.get("model_type"),
        "quantization": config.get("quantization"),
        "vocab_size": vocab,
        "max_tokens": args.max_tokens,
        "load_s": load_s,
        "prompts": results,
        "margin_summary": margin_summary(
            [m for r in results for m in r["margins"]], [t for r in results for t in r["top1_logit"]]
        ),
    }
    if not args.no_logits:
        path = args.logits_out or args.out.with_suffix(".logits.safetensors")
        mx.save_safetensors(str(path), {k: mx.array(v) for k, v in logits_by_prompt.items()})
        report["logits_file"] = str(path)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")

    s = report["margin_summary"]
    print(
        f"{args.model.name}: {len(prompts)} prompts x {args.max_tokens} tokens; "
        f"margin min {s.get('min', math.nan):.4f} p05 {s.get('p05', math.nan):.4f} "
        f"median {s.get('median', math.nan):.4f}; below 0.1: {s.get('below_0.1')}; "
        f"relative < 2^-6: {s.get('relative_below_2^-6')}; distinct {[r['distinct_generated'] for r in results]}; "
        + "; ".join(f"tok/s {r['decode_tokens_per_s'] or 0:.1f}" for r in results),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
