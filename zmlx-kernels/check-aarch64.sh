#!/usr/bin/env bash
# Runs the CPU kernels' tests (zmlx-kernels/tests/cpu) for aarch64 under qemu: the NEON
# and portable paths, which this x86_64 machine cannot run natively. MLX publishes no
# linux/aarch64 wheel, so the harness builds the `cpu` module alone (it needs no MLX),
# as a crate of the same name, in target/aarch64-check.
#
# Needs: rustup's aarch64-unknown-linux-gnu target, gcc-aarch64-linux-gnu and
# qemu-user (Debian: `apt-get install -y gcc-aarch64-linux-gnu qemu-user`). About 2
# minutes on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
h="$root/target/aarch64-check"
mkdir -p "$h/src" "$h/.cargo"
rustup target add aarch64-unknown-linux-gnu >/dev/null
cat >"$h/Cargo.toml" <<TOML
[package]
name = "zmlx-kernels"
version = "0.0.0"
edition = "2021"

[workspace]

[dependencies]
half = { version = "2.4", features = ["num-traits", "bytemuck"] }
thiserror = "2"
rayon = "1.10"

[dev-dependencies]
proptest = "1.5"

[[test]]
name = "cpu"
path = "$root/zmlx-kernels/tests/cpu/main.rs"

[profile.dev]
opt-level = 2
TOML
cat >"$h/src/lib.rs" <<RS
//! The CPU kernels of zmlx-kernels alone, for the aarch64 check.
#[path = "$root/zmlx-kernels/src/cpu/mod.rs"]
pub mod cpu;
#[path = "$root/zmlx-kernels/src/thread_override.rs"]
mod thread_override;
RS
cat >"$h/.cargo/config.toml" <<CFG
[target.aarch64-unknown-linux-gnu]
linker = "aarch64-linux-gnu-gcc"
runner = "qemu-aarch64 -L /usr/aarch64-linux-gnu"
CFG
cd "$h"
cargo test --target aarch64-unknown-linux-gnu --test cpu
