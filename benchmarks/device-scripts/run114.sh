#!/usr/bin/env bash
# Device run 114: the router matmul inside the routed SwiGLU kernel through a
# per-layer scratch (a63943c): its test with poisoned outputs, the block bench
# (router+res variant), and the patched model's fidelity with it on.
set -u
eval "$(bash ~/mlx-stash/install.sh | grep '^MLX_CUDA_LIB=')"
export LD_LIBRARY_PATH=$MLX_CUDA_LIB:/usr/local/cuda/lib64 MLX_PTX_CACHE_DIR=/tmp/mlxptx
date -u +%FT%TZ | tee $OUT/times.txt
( time ZMLX_GPU_POISON=1 timeout 150 .carry/tests/cuda_vs_reference router_swiglu --nocapture ) > $OUT/tests.log 2>&1
echo "rc=$?" >> $OUT/tests.log
date -u +%FT%TZ >> $OUT/times.txt
( time timeout 90 .carry/bin/cuda_moe_bench --iters 20 --block-only ) > $OUT/block.log 2>&1
echo "rc=$?" >> $OUT/block.log
date -u +%FT%TZ >> $OUT/times.txt
if grep -q 'test result: ok' $OUT/tests.log; then
  ( time timeout 170 .carry/bin/qwen3_moe --preset qwen3-30b-a3b --quant 4 --device gpu --max-tokens 100 --runs 1 --fidelity-tokens 200 ) > $OUT/fidelity.log 2>&1
  echo "rc=$?" >> $OUT/fidelity.log
fi
date -u +%FT%TZ >> $OUT/times.txt
grep -E "ROUTER QDEQ|^test |test result|rc=|panicked|failed" $OUT/tests.log | head -40
grep -iE "one block|per block|speedup|router swiglu|router matmul|rc=" $OUT/block.log
grep -iE "fidelity|speedup|tok/s|rc=|route_swiglu" $OUT/fidelity.log 2>/dev/null | tail -8
