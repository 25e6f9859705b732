#!/usr/bin/env bash
# Device run 111: the routed SwiGLU test on 9b5a4b1 (run 109 ran out of time before
# it), profilers on the machine, and more block bench A/B alternations.
set -u
eval "$(bash ~/mlx-stash/install.sh | grep '^MLX_CUDA_LIB=')"
export LD_LIBRARY_PATH=$MLX_CUDA_LIB:/usr/local/cuda/lib64 MLX_PTX_CACHE_DIR=/tmp/mlxptx
date -u +%FT%TZ | tee $OUT/times.txt
{ which perf nsys gdb valgrind; ls /usr/local/cuda/bin; ls /opt 2>/dev/null; } > $OUT/tools.txt 2>&1
( time timeout 260 .carry/tests/cuda_vs_reference routed_swiglu ) > $OUT/tests.log 2>&1
echo "rc=$?" >> $OUT/tests.log
date -u +%FT%TZ >> $OUT/times.txt
for i in 1 2 3; do
  for b in cuda_moe_bench cuda_moe_bench_base; do
    ( time timeout 75 .carry/bin/$b --iters 20 --block-only ) > $OUT/block_${b}_$i.log 2>&1
    echo "rc=$?" >> $OUT/block_${b}_$i.log
  done
done
date -u +%FT%TZ >> $OUT/times.txt
cat $OUT/tools.txt | tr '\n' ' '; echo
grep -E "^test |test result|rc=" $OUT/tests.log | tail -4
for i in 1 2 3; do for b in cuda_moe_bench cuda_moe_bench_base; do echo "== $b $i"; grep -E "reference:|routed\+res:" $OUT/block_${b}_$i.log | cut -c1-60; grep 'speedup routed+res' $OUT/block_${b}_$i.log; done; done
