#!/usr/bin/env bash
# Device run 112: does MLX's graph commit rate set the block's time? MLX commits its
# CUDA graph when it holds over MLX_MAX_MB_PER_BUFFER (1000 on an H100) MB of inputs;
# every expert op lists its whole weight stacks (~340 MB a block), so it commits about
# every third block. 9b5a4b1's bench with the default and with the limit lifted.
set -u
eval "$(bash ~/mlx-stash/install.sh | grep '^MLX_CUDA_LIB=')"
export LD_LIBRARY_PATH=$MLX_CUDA_LIB:/usr/local/cuda/lib64 MLX_PTX_CACHE_DIR=/tmp/mlxptx
date -u +%FT%TZ | tee $OUT/times.txt
for i in 1 2; do
  ( time timeout 75 .carry/bin/cuda_moe_bench --iters 20 --block-only ) > $OUT/block_default_$i.log 2>&1
  ( time MLX_MAX_MB_PER_BUFFER=1000000 timeout 75 .carry/bin/cuda_moe_bench --iters 20 --block-only ) > $OUT/block_nomb_$i.log 2>&1
done
( time timeout 100 .carry/bin/cuda_moe_bench --host-cost --iters 20 --layers 48 ) > $OUT/host_default.log 2>&1
( time MLX_MAX_MB_PER_BUFFER=1000000 timeout 100 .carry/bin/cuda_moe_bench --host-cost --iters 20 --layers 48 ) > $OUT/host_nomb.log 2>&1
date -u +%FT%TZ >> $OUT/times.txt
for i in 1 2; do for v in default nomb; do echo "== $v $i"; grep -E "reference:|routed\+res:" $OUT/block_${v}_$i.log | cut -c1-150; grep 'speedup routed+res' $OUT/block_${v}_$i.log; done; done
for v in default nomb; do echo "== host $v"; grep -E "MoE block" $OUT/host_$v.log; done
