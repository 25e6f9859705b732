#!/usr/bin/env bash
# Device run 122: d204f54 (four SwiGLU tiles a block by default): every CUDA kernel
# test with poisoned outputs.
set -u
eval "$(bash ~/mlx-stash/install.sh | grep '^MLX_CUDA_LIB=')"
export LD_LIBRARY_PATH=$MLX_CUDA_LIB:/usr/local/cuda/lib64 MLX_PTX_CACHE_DIR=/tmp/mlxptx
date -u +%FT%TZ | tee $OUT/all.log
( time ZMLX_GPU_POISON=1 timeout 560 .carry/tests/cuda_vs_reference --test-threads 1 --nocapture ) >> $OUT/all.log 2>&1
date -u +%FT%TZ >> $OUT/all.log
grep -E "^test |test result|FAIL|panicked" $OUT/all.log | cut -c1-200 | tail -30
