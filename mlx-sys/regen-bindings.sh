#!/usr/bin/env bash
# Regenerates mlx-sys/src/bindings.rs from csrc/mlx_shim.h.
# Needs bindgen-cli 0.72.1 (`cargo install --root target/tools bindgen-cli --version 0.72.1 --locked`)
# and libclang (Debian: apt-get install libclang-dev).
# With --check, it only compares the committed file with a fresh generation.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
bindgen=${BINDGEN:-}
if [ -z "$bindgen" ]; then
  if [ -x "$top/target/tools/bin/bindgen" ]; then bindgen="$top/target/tools/bin/bindgen"; else bindgen=bindgen; fi
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$bindgen" "$here/csrc/mlx_shim.h" \
  --allowlist-function 'mlxs_.*' --allowlist-type 'mlxs_.*' --allowlist-var 'MLXS_.*' \
  --no-layout-tests --no-doc-comments --use-core --merge-extern-blocks \
  --default-enum-style consts --no-prepend-enum-name \
  -o "$out" -- -x c -std=c11
if [ "${1:-}" = "--check" ]; then
  if ! diff -u "$here/src/bindings.rs" "$out"; then
    echo "mlx-sys/src/bindings.rs differs from a fresh generation: run mlx-sys/regen-bindings.sh" >&2
    exit 1
  fi
  echo "bindings up to date"
else
  cp "$out" "$here/src/bindings.rs"
  echo "wrote $here/src/bindings.rs"
fi
