#!/usr/bin/env bash
# Device run 113: the patched 48-layer decode with graph-node reuse (9b5a4b1, new)
# against 1c8e3c1 (base), alternated, patched model only, step timing on.
set -u
eval "$(bash ~/mlx-stash/install.sh | grep '^MLX_CUDA_LIB=')"
export LD_LIBRARY_PATH=$MLX_CUDA_LIB:/usr/local/cuda/lib64 MLX_PTX_CACHE_DIR=/tmp/mlxptx
date -u +%FT%TZ | tee $OUT/times.txt
for i in 1 2 3; do
  for b in qwen3_moe qwen3_moe_base; do
    ( time ZMLX_STEP_TIMING=1 timeout 90 .carry/bin/$b --preset qwen3-30b-a3b --quant 4 --device gpu --runs 1 --in-process --max-tokens 100 --patched-only ) > $OUT/${b}_$i.log 2>&1
    echo "rc=$?" >> $OUT/${b}_$i.log
  done
done
date -u +%FT%TZ >> $OUT/times.txt
for i in 1 2 3; do for b in qwen3_moe qwen3_moe_base; do echo "== $b $i"; grep -E "^step timing|^run 1|^real|rc=" $OUT/${b}_$i.log; done; done
