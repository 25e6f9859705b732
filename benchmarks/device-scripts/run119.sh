#!/usr/bin/env bash
# Device run 119: 19bd9a8's block bench under the fused router's tiling variants
# (router rows a warp loads at once, SwiGLU tiles a block), alternated three times.
set -u
eval "$(bash ~/mlx-stash/install.sh | grep '^MLX_CUDA_LIB=')"
export LD_LIBRARY_PATH=$MLX_CUDA_LIB:/usr/local/cuda/lib64 MLX_PTX_CACHE_DIR=/tmp/mlxptx
date -u +%FT%TZ | tee $OUT/times.txt
for rep in 1 2 3; do
  for cfg in default ZMLX_CUDA_RROWS=1 ZMLX_CUDA_RROWS=4 ZMLX_CUDA_TPB=4 ZMLX_CUDA_TPB=1; do
    name=${cfg//=/_}
    if [ "$cfg" = default ]; then e=(); else e=("$cfg"); fi
    ( time env "${e[@]}" timeout 60 .carry/bin/cuda_moe_bench --iters 20 --block-only ) > $OUT/block_${name}_$rep.log 2>&1
  done
done
date -u +%FT%TZ >> $OUT/times.txt
for f in $OUT/block_*.log; do echo "== $(basename $f)"; grep -E "differ|reference:|routed\+res:|router\+res:|interleav" $f | sed 's/ per block (48 chained, median of 20)//; s/floor fraction [0-9.]*; //' | cut -c1-150; done
