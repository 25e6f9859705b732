#!/usr/bin/env bash
# Device run 123: d204f54: the block bench with two and four SwiGLU tiles a block,
# alternated twice, then the 7-pair 48-layer record with the new default.
set -u
eval "$(bash ~/mlx-stash/install.sh | grep '^MLX_CUDA_LIB=')"
export LD_LIBRARY_PATH=$MLX_CUDA_LIB:/usr/local/cuda/lib64 MLX_PTX_CACHE_DIR=/tmp/mlxptx
date -u +%FT%TZ | tee $OUT/all.log
for rep in 1 2; do
  for tpb in 2 4; do
    echo "===== TPB $tpb rep $rep" >> $OUT/all.log
    ( time ZMLX_CUDA_TPB=$tpb timeout 60 .carry/bin/cuda_moe_bench --iters 20 --block-only ) >> $OUT/all.log 2>&1
  done
done
echo "===== record" >> $OUT/all.log
date -u +%FT%TZ >> $OUT/all.log
( time ZMLX_GIT_COMMIT=d204f542f208 timeout 500 .carry/bin/qwen3_moe --preset qwen3-30b-a3b --quant 4 --device gpu --max-tokens 200 --runs 7 --fidelity-tokens 200 --record --json ) >> $OUT/all.log 2>&1
date -u +%FT%TZ >> $OUT/all.log
mkdir -p $OUT/rec && tail -1 benchmarks/matrix.jsonl > $OUT/rec/row.jsonl
cp $(ls -t benchmarks/capsules/*.json | head -1) $OUT/rec/
grep -E "^=====|reference:|routed\+res:|router\+res:|interleaved chained|^run [0-9]/7|decode tokens|speedup  |fidelity PASS|fidelity FAIL" $OUT/all.log | sed 's/ per block (48 chained, median of 20)//; s/floor fraction [0-9.]*; //' | cut -c1-160
