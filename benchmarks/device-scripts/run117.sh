#!/usr/bin/env bash
# Device run 117: e2056df, the 7-pair 48-layer record on the H100.
set -u
eval "$(bash ~/mlx-stash/install.sh | grep '^MLX_CUDA_LIB=')"
export LD_LIBRARY_PATH=$MLX_CUDA_LIB:/usr/local/cuda/lib64 MLX_PTX_CACHE_DIR=/tmp/mlxptx
date -u +%FT%TZ | tee $OUT/times.txt
( time ZMLX_GIT_COMMIT=e2056dfa8574 timeout 560 .carry/bin/qwen3_moe --preset qwen3-30b-a3b --quant 4 --device gpu --max-tokens 200 --runs 7 --fidelity-tokens 200 --record --json ) > $OUT/record.log 2>&1
date -u +%FT%TZ >> $OUT/times.txt
mkdir -p $OUT/rec && tail -1 benchmarks/matrix.jsonl > $OUT/rec/row.jsonl
cp $(ls -t benchmarks/capsules/*.json | head -1) $OUT/rec/
tail -30 $OUT/record.log | cut -c1-200
