#!/usr/bin/env bash
# Device run 124: d204f54's patched 48-layer decode (step timing) with two and four
# SwiGLU tiles a block, alternated four times.
set -u
eval "$(bash ~/mlx-stash/install.sh | grep '^MLX_CUDA_LIB=')"
export LD_LIBRARY_PATH=$MLX_CUDA_LIB:/usr/local/cuda/lib64 MLX_PTX_CACHE_DIR=/tmp/mlxptx
date -u +%FT%TZ | tee $OUT/all.log
for rep in 1 2 3 4; do
  for tpb in 2 4; do
    echo "===== decode TPB $tpb rep $rep" >> $OUT/all.log
    ( time ZMLX_CUDA_TPB=$tpb ZMLX_STEP_TIMING=1 timeout 60 .carry/bin/qwen3_moe --preset qwen3-30b-a3b --quant 4 --device gpu --runs 1 --in-process --max-tokens 100 --patched-only ) >> $OUT/all.log 2>&1
  done
done
date -u +%FT%TZ >> $OUT/all.log
grep -E "^=====|^step timing|^run 1" $OUT/all.log | cut -c1-170
