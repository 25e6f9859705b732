#!/usr/bin/env bash
# Device run 120: 19bd9a8's block bench, default (TPB 2) against ZMLX_CUDA_TPB=4,
# alternated four times; all logs in one file (run 119 lost files to the
# per-call file limit).
set -u
eval "$(bash ~/mlx-stash/install.sh | grep '^MLX_CUDA_LIB=')"
export LD_LIBRARY_PATH=$MLX_CUDA_LIB:/usr/local/cuda/lib64 MLX_PTX_CACHE_DIR=/tmp/mlxptx
date -u +%FT%TZ | tee $OUT/all.log
for rep in 1 2 3 4; do
  for tpb in 2 4; do
    echo "===== TPB $tpb rep $rep" >> $OUT/all.log
    ( time ZMLX_CUDA_TPB=$tpb timeout 60 .carry/bin/cuda_moe_bench --iters 20 --block-only ) >> $OUT/all.log 2>&1
  done
done
date -u +%FT%TZ >> $OUT/all.log
grep -E "^=====|reference:|router\+res:|interleaved chained, router" $OUT/all.log | sed 's/ per block (48 chained, median of 20)//; s/floor fraction [0-9.]*; //' | cut -c1-150
