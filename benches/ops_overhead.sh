#!/usr/bin/env bash
# Runs the per-op overhead benchmark in Rust and in Python mlx back to back and
# prints both figures. Python: $PYTHON, else .venv/bin/python, else python3 (needs
# `pip install mlx mlx-cpu` on Linux, the same MLX version as mlx-sys).
set -euo pipefail
cd "$(dirname "$0")/.."
OPS=${OPS:-1000}
REPS=${REPS:-200}
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
cargo bench -q -p mlx --bench ops_overhead -- --ops "$OPS" --reps "$REPS" 2>/dev/null | grep '^rust'
"$PY" benches/python/ops_overhead.py --ops "$OPS" --reps "$REPS"
