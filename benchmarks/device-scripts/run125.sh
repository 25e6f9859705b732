#!/usr/bin/env bash
# Device run 125: qmv_probe (the probe's commit): MLX's one-token 4-bit quantized
# matmul against the probe kernel's variants, bit for bit, and their times.
set -u
eval "$(bash ~/mlx-stash/install.sh | grep '^MLX_CUDA_LIB=')"
export LD_LIBRARY_PATH=$MLX_CUDA_LIB:/usr/local/cuda/lib64 MLX_PTX_CACHE_DIR=/tmp/mlxptx
date -u +%FT%TZ | tee $OUT/all.log
( time timeout 400 .carry/bin/qmv_probe ) >> $OUT/all.log 2>&1
date -u +%FT%TZ >> $OUT/all.log
cat $OUT/all.log | cut -c1-400
