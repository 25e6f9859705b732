#!/usr/bin/env bash
# Device run 110: second A/B of the block bench, and the host-cost split, for the
# shim's reused graph nodes (new) against 1c8e3c1 (base).
set -u
eval "$(bash ~/mlx-stash/install.sh | grep '^MLX_CUDA_LIB=')"
export LD_LIBRARY_PATH=$MLX_CUDA_LIB:/usr/local/cuda/lib64 MLX_PTX_CACHE_DIR=/tmp/mlxptx
date -u +%FT%TZ | tee $OUT/times.txt
for b in cuda_moe_bench cuda_moe_bench_base; do
  ( time timeout 75 .carry/bin/$b --iters 20 --block-only ) > $OUT/block_$b.log 2>&1
  echo "rc=$?" >> $OUT/block_$b.log
done
for b in cuda_moe_bench_base cuda_moe_bench; do
  ( time timeout 100 .carry/bin/$b --host-cost --iters 20 --layers 48 ) > $OUT/host_$b.log 2>&1
  echo "rc=$?" >> $OUT/host_$b.log
done
date -u +%FT%TZ >> $OUT/times.txt
for b in cuda_moe_bench_base cuda_moe_bench; do echo "== $b"; grep -iE "per block|speedup|rc=" $OUT/block_$b.log; done
for b in cuda_moe_bench_base cuda_moe_bench; do echo "== host $b"; tail -14 $OUT/host_$b.log; done
