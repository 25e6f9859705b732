//! Finds MLX (or fetches its wheel), compiles the C shim and links `libmlx`.
//!
//! Search order, first match wins:
//! 1. `MLX_DIR`: a prefix holding `include/mlx/` and `lib/libmlx.{so,dylib}`;
//! 2. a Python-installed `mlx` package whose folder holds `include/` and `lib/`
//!    (from the `mlx-cpu`, `mlx-metal` or `mlx-cuda-*` wheels);
//! 3. the platform's wheel, fetched with `pip download --no-deps` into a cache under
//!    the target folder and unpacked there.
//!
//! The MLX version must be the pinned one unless `MLX_ALLOW_VERSION_MISMATCH=1`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The MLX release this shim is written and tested against.
const MLX_VERSION: &str = "0.32.4";

fn main() {
    for var in [
        "MLX_DIR",
        "MLX_ALLOW_VERSION_MISMATCH",
        "MLX_PYTHON",
        "MLX_NO_PYTHON_PACKAGE",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=csrc");

    let prefix = match find_mlx() {
        Ok(p) => p,
        Err(msg) => fail(&msg),
    };
    if let Err(msg) = check_version(&prefix) {
        fail(&msg);
    }
    let include = prefix.join("include");
    let lib = prefix.join("lib");

    compile_shim(&include);

    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=mlx");
    // Dependents read these as DEP_MLX_LIB_DIR / DEP_MLX_INCLUDE_DIR; their build
    // scripts set the runpath of their own binaries (cargo does not propagate it).
    println!("cargo:lib_dir={}", lib.display());
    println!("cargo:include_dir={}", include.display());
    println!("cargo:version={MLX_VERSION}");
    // RUNPATH (not RPATH) so that LD_LIBRARY_PATH still wins: a built binary can be
    // pointed at MLX's CUDA libmlx.so of the same version.
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags");
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}

fn fail(msg: &str) -> ! {
    eprintln!("\nmlx-sys: {msg}\n");
    panic!("mlx-sys: {msg}");
}

fn lib_name() -> &'static str {
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("macos") {
        "libmlx.dylib"
    } else {
        "libmlx.so"
    }
}

fn is_mlx_prefix(p: &Path) -> bool {
    p.join("include/mlx/mlx.h").is_file() && p.join("lib").join(lib_name()).is_file()
}

fn find_mlx() -> Result<PathBuf, String> {
    if let Ok(dir) = env::var("MLX_DIR") {
        let p = PathBuf::from(&dir);
        if is_mlx_prefix(&p) {
            return Ok(p);
        }
        return Err(format!(
            "MLX_DIR={dir} does not hold include/mlx/mlx.h and lib/{}; point it at an MLX \
             install prefix or unset it",
            lib_name()
        ));
    }
    if env::var("MLX_NO_PYTHON_PACKAGE").is_err() {
        if let Some(p) = python_mlx_prefix() {
            if is_mlx_prefix(&p) {
                return Ok(p);
            }
        }
    }
    fetch_wheel()
}

fn python() -> String {
    env::var("MLX_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// The folder of an installed Python `mlx` package, if any.
fn python_mlx_prefix() -> Option<PathBuf> {
    let out = Command::new(python())
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('mlx'); \
             print(list(s.submodule_search_locations)[0] if s else '')",
        ])
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// The wheel this platform needs, or an explanation of why there is none.
fn wheel_package() -> Result<&'static str, String> {
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    match (os.as_str(), arch.as_str()) {
        ("linux", "x86_64") => Ok("mlx-cpu"),
        ("macos", "aarch64") => Ok("mlx-metal"),
        _ => Err(format!(
            "no MLX {MLX_VERSION} wheel is published for {os}/{arch}; build MLX {MLX_VERSION} \
             from source and set MLX_DIR to its install prefix"
        )),
    }
}

/// The cache folder: `<target>/<profile>/mlx-<version>`.
///
/// It lives inside the profile folder because cargo adds link-search paths under
/// that folder to the library path of `cargo run`, `cargo test` and doctests (which
/// get no runpath of their own).
fn cache_dir() -> PathBuf {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let profile = out
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(|build| build.parent())
        .map(Path::to_path_buf)
        .unwrap_or(out);
    profile.join(format!("mlx-{MLX_VERSION}"))
}

fn fetch_wheel() -> Result<PathBuf, String> {
    let package = wheel_package()?;
    let cache = cache_dir();
    let unpacked = cache.join("unpacked");
    let prefix = unpacked.join("mlx");
    if is_mlx_prefix(&prefix) {
        return Ok(prefix);
    }
    fs::create_dir_all(&cache).map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    let spec = format!("{package}=={MLX_VERSION}");
    let status = Command::new(python())
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "--dest"])
        .arg(&cache)
        .arg(&spec)
        .status()
        .map_err(|e| {
            format!(
                "could not run `{} -m pip` to fetch {spec} ({e}). Install Python 3 with pip, \
                 or `pip install {spec}`, or set MLX_DIR to an MLX {MLX_VERSION} prefix",
                python()
            )
        })?;
    if !status.success() {
        return Err(format!(
            "`pip download {spec}` failed. It needs network access to PyPI and, on Linux, \
             glibc >= 2.35 (the wheel is manylinux_2_35). Otherwise build MLX {MLX_VERSION} and \
             set MLX_DIR to its install prefix"
        ));
    }
    let wheel = fs::read_dir(&cache)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|x| x == "whl")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.contains(MLX_VERSION))
        })
        .ok_or_else(|| {
            format!(
                "pip reported success but no wheel is in {}",
                cache.display()
            )
        })?;
    // Python's zipfile keeps the wheel's layout (mlx/lib next to mlx_cpu.libs/, which
    // libmlx.so finds through its own $ORIGIN runpath).
    let tmp = cache.join("unpacking");
    let _ = fs::remove_dir_all(&tmp);
    let status = Command::new(python())
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&tmp)
        .status()
        .map_err(|e| format!("could not unpack {}: {e}", wheel.display()))?;
    if !status.success() {
        return Err(format!("could not unpack {}", wheel.display()));
    }
    let _ = fs::remove_dir_all(&unpacked);
    fs::rename(&tmp, &unpacked).map_err(|e| e.to_string())?;
    if is_mlx_prefix(&prefix) {
        Ok(prefix)
    } else {
        Err(format!(
            "the wheel {} does not hold mlx/include and mlx/lib/{}",
            wheel.display(),
            lib_name()
        ))
    }
}

fn check_version(prefix: &Path) -> Result<(), String> {
    let header = prefix.join("include/mlx/version.h");
    let text = fs::read_to_string(&header)
        .map_err(|e| format!("cannot read {}: {e}", header.display()))?;
    let part = |name: &str| -> Option<String> {
        text.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(&format!("#define MLX_VERSION_{name} "))
            })
            .map(|v| v.trim().to_string())
    };
    let found = match (part("MAJOR"), part("MINOR"), part("PATCH")) {
        (Some(a), Some(b), Some(c)) => format!("{a}.{b}.{c}"),
        _ => {
            return Err(format!(
                "cannot read the MLX version from {}",
                header.display()
            ))
        }
    };
    if found != MLX_VERSION && env::var("MLX_ALLOW_VERSION_MISMATCH").as_deref() != Ok("1") {
        return Err(format!(
            "found MLX {found} at {}, but mlx-sys is written for MLX {MLX_VERSION}. Install \
             {MLX_VERSION}, point MLX_DIR at it, set MLX_NO_PYTHON_PACKAGE=1 to let the build \
             fetch it, or set MLX_ALLOW_VERSION_MISMATCH=1 to try anyway",
            prefix.display()
        ));
    }
    Ok(())
}

fn compile_shim(include: &Path) {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        .include(include)
        .include("csrc")
        .warnings(false)
        .flag_if_supported("-fvisibility=hidden")
        .opt_level(2);
    let mut files: Vec<PathBuf> = fs::read_dir("csrc")
        .expect("mlx-sys/csrc exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cpp"))
        .collect();
    files.sort();
    for f in &files {
        build.file(f);
    }
    build.compile("mlx_shim");
}
