"""Per-op overhead of building and evaluating a long element-wise graph in Python mlx.

The same graph as mlx/benches/ops_overhead.rs: a chain of N element-wise ops
(alternating add and multiply with two constant [16] float32 arrays) on a [16]
float32 array, evaluated; median microseconds per op for build, eval and both.

    python benches/python/ops_overhead.py [--ops N] [--reps R]
"""

import argparse
import statistics
import time

import mlx.core as mx


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ops", type=int, default=1000)
    p.add_argument("--reps", type=int, default=200)
    args = p.parse_args()
    ops, reps, warmup = args.ops, args.reps, 20

    cpu = mx.cpu
    x0 = mx.full((16,), 0.5, dtype=mx.float32)
    a = mx.full((16,), 0.25, dtype=mx.float32)
    b = mx.full((16,), 0.5, dtype=mx.float32)
    mx.eval(x0, a, b)

    build, ev, total = [], [], []
    for r in range(warmup + reps):
        t0 = time.perf_counter()
        y = x0
        for i in range(ops):
            y = mx.add(y, a, stream=cpu) if i % 2 == 0 else mx.multiply(y, b, stream=cpu)
        t1 = time.perf_counter()
        mx.eval(y)
        t2 = time.perf_counter()
        if r >= warmup:
            build.append((t1 - t0) * 1e6 / ops)
            ev.append((t2 - t1) * 1e6 / ops)
            total.append((t2 - t0) * 1e6 / ops)
    print(
        f"python mlx {mx.__version__}  ops={ops} reps={reps}  us/op: "
        f"build {statistics.median(build):.3f}  eval {statistics.median(ev):.3f}  "
        f"total {statistics.median(total):.3f}"
    )


if __name__ == "__main__":
    main()
