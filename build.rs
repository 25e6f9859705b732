//! Sets the runpath of this package's tests, examples and benches to MLX's library
//! folder (cargo does not pass mlx-sys's link arguments on to dependents).
fn main() {
    if let Ok(dir) = std::env::var("DEP_MLX_LIB_DIR") {
        if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
            println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags");
        }
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
