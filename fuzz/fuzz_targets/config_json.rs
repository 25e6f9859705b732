#![no_main]
//! Fuzzes the Qwen3-MoE config parser (see `src/checks.rs`).

#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::check_config(data);
});
