#![no_main]
//! Fuzzes the safetensors header validator (see `src/checks.rs`).

#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::check_safetensors(data);
});
