#!/usr/bin/env bash
# Device run 118: the fused router's bounded wait (RWAIT, then __trap): the trap
# test (a 0 us wait in a child process), the router SwiGLU test with poisoned
# outputs (default 1 s bound: still exact), the block bench once, the 48-layer
# fidelity check.
set -u
eval "$(bash ~/mlx-stash/install.sh | grep '^MLX_CUDA_LIB=')"
export LD_LIBRARY_PATH=$MLX_CUDA_LIB:/usr/local/cuda/lib64 MLX_PTX_CACHE_DIR=/tmp/mlxptx
date -u +%FT%TZ | tee $OUT/times.txt
( time timeout 200 .carry/tests/cuda_vs_reference --test-threads 1 --nocapture router_swiglu_wait_traps ) > $OUT/trap.log 2>&1
date -u +%FT%TZ >> $OUT/times.txt
( time ZMLX_GPU_POISON=1 timeout 250 .carry/tests/cuda_vs_reference --test-threads 1 --nocapture router_swiglu_matches ) > $OUT/tests.log 2>&1
date -u +%FT%TZ >> $OUT/times.txt
( time timeout 60 .carry/bin/cuda_moe_bench --iters 20 --block-only ) > $OUT/block.log 2>&1
( time timeout 200 .carry/bin/qwen3_moe --preset qwen3-30b-a3b --quant 4 --device gpu --max-tokens 100 --runs 1 --fidelity-tokens 200 ) > $OUT/fidelity.log 2>&1
date -u +%FT%TZ >> $OUT/times.txt
tail -25 $OUT/trap.log | cut -c1-300
grep -E "^test |test result" $OUT/tests.log; grep -c "QDEQ 2.*EXACT" $OUT/tests.log
grep -E "reference:|routed\+res:|router\+res:|interleav" $OUT/block.log | cut -c1-160
grep -E "fidelity PASS|fidelity FAIL|speedup|decode tokens" $OUT/fidelity.log | head -4
