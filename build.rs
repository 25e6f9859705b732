//! Sets the runpath of this package's tests, examples and benches to MLX's library
//! folder (cargo does not pass mlx-sys's link arguments on to dependents), and records
//! the compiler version for benchmark records.
fn main() {
    if let Ok(dir) = std::env::var("DEP_MLX_LIB_DIR") {
        if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
            println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags");
        }
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ZMLX_RUSTC_VERSION={}", version.trim());
}
