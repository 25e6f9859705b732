#!/usr/bin/env bash
# Device run 109: custom-kernel graph nodes reused by the shim (commit 9b5a4b1):
# kernel tests, a fidelity check of the patched model, block bench A/B against the
# binary of 1c8e3c1.
set -u
eval "$(bash ~/mlx-stash/install.sh | grep '^MLX_CUDA_LIB=')"
export LD_LIBRARY_PATH=$MLX_CUDA_LIB:/usr/local/cuda/lib64 MLX_PTX_CACHE_DIR=/tmp/mlxptx
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
date -u +%FT%TZ | tee $OUT/times.txt
( time timeout 200 .carry/tests/cuda_vs_reference routed_swiglu expert_kernels_qwen3 down_combine_residual down_combine_normed ) > $OUT/tests.log 2>&1
echo "rc=$?" >> $OUT/tests.log
date -u +%FT%TZ >> $OUT/times.txt
( time timeout 150 .carry/bin/qwen3_moe --preset qwen3-30b-a3b --quant 4 --device gpu --max-tokens 100 --runs 1 --fidelity-tokens 200 ) > $OUT/fidelity.log 2>&1
echo "rc=$?" >> $OUT/fidelity.log
date -u +%FT%TZ >> $OUT/times.txt
for b in cuda_moe_bench_base cuda_moe_bench; do
  ( time timeout 75 .carry/bin/$b --iters 20 --block-only ) > $OUT/block_$b.log 2>&1
  echo "rc=$?" >> $OUT/block_$b.log
done
date -u +%FT%TZ >> $OUT/times.txt
grep -E "^test |test result|rc=|panicked" $OUT/tests.log | tail -12
grep -iE "fidelity|PASS|FAIL|tok/s|rc=" $OUT/fidelity.log | tail -8
for b in cuda_moe_bench_base cuda_moe_bench; do echo "== $b"; grep -iE "one block|per block|speedup|rc=" $OUT/block_$b.log; done
