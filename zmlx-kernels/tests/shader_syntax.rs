//! CI compile checks of the GPU kernel bodies on machines without a GPU: the CUDA
//! bodies (NVRTC compiles them for real on the device) and the Metal bodies (not
//! yet run on Apple silicon) are wrapped in the signatures MLX generates and
//! compiled with `g++ -fsyntax-only` against mock headers. See
//! `shaders/check-cuda.sh` and `shaders/check-metal.sh`.

use std::path::Path;
use std::process::Command;

fn run_check(script: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join("shaders").join(script);
    let out = Command::new("bash")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cuda_bodies_compile_against_the_mock() {
    run_check("check-cuda.sh");
}

#[test]
fn metal_bodies_compile_against_the_mock() {
    run_check("check-metal.sh");
}
