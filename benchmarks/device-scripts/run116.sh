#!/usr/bin/env bash
# Device run 116: e2056df (the final code of the seventeenth session): kernel tests
# with poisoned outputs (routed and router SwiGLU), the block bench twice (its
# interleaved chained ratio, first run), and the host-cost rows.
set -u
eval "$(bash ~/mlx-stash/install.sh | grep '^MLX_CUDA_LIB=')"
export LD_LIBRARY_PATH=$MLX_CUDA_LIB:/usr/local/cuda/lib64 MLX_PTX_CACHE_DIR=/tmp/mlxptx
date -u +%FT%TZ | tee $OUT/times.txt
( time ZMLX_GPU_POISON=1 timeout 280 .carry/tests/cuda_vs_reference --test-threads 1 --nocapture routed_swiglu router_swiglu ) > $OUT/tests.log 2>&1
date -u +%FT%TZ >> $OUT/times.txt
for i in 1 2; do
  ( time timeout 60 .carry/bin/cuda_moe_bench --iters 20 --block-only ) > $OUT/block_$i.log 2>&1
done
( time timeout 120 .carry/bin/cuda_moe_bench --iters 20 --host-cost ) > $OUT/hostcost.log 2>&1
date -u +%FT%TZ >> $OUT/times.txt
grep -E "^test |test result|ROUTER QDEQ 2" $OUT/tests.log | grep -v EXACT | tail -12
grep -c "QDEQ 2.*EXACT" $OUT/tests.log
for i in 1 2; do echo "== block $i"; grep -E "reference:|routed\+res:|router\+res:|speedup|interleav|ratio" $OUT/block_$i.log | cut -c1-160; done
tail -40 $OUT/hostcost.log | cut -c1-160
