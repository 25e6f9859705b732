#!/usr/bin/env bash
# Device run 115: a63943c, the patched decode with the fused router on and off
# (ZMLX_CUDA_FUSED_ROUTER=0), alternated, and the block bench twice.
set -u
eval "$(bash ~/mlx-stash/install.sh | grep '^MLX_CUDA_LIB=')"
export LD_LIBRARY_PATH=$MLX_CUDA_LIB:/usr/local/cuda/lib64 MLX_PTX_CACHE_DIR=/tmp/mlxptx
date -u +%FT%TZ | tee $OUT/times.txt
for i in 1 2; do
  for fr in 1 0; do
    ( time ZMLX_CUDA_FUSED_ROUTER=$fr ZMLX_STEP_TIMING=1 timeout 60 .carry/bin/qwen3_moe --preset qwen3-30b-a3b --quant 4 --device gpu --runs 1 --in-process --max-tokens 100 --patched-only ) > $OUT/decode_fr${fr}_$i.log 2>&1
  done
  ( time timeout 60 .carry/bin/cuda_moe_bench --iters 20 --block-only ) > $OUT/block_$i.log 2>&1
done
date -u +%FT%TZ >> $OUT/times.txt
for i in 1 2; do for fr in 1 0; do echo "== fused router $fr, $i"; grep -E "^step timing|^run 1" $OUT/decode_fr${fr}_$i.log; done; echo "== block $i"; grep -E "reference:|routed\+res:|router\+res:|speedup route" $OUT/block_$i.log | cut -c1-140; done
