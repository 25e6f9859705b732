//! CUDA kernel headers and bodies as files that the kernel source includes.
//!
//! MLX's `fast::cuda_kernel` pastes the header and the body into each call's source
//! and `CustomKernel::eval_gpu` hashes that whole source on every launch (its module
//! cache key). The expert kernels' header is 13-16 KB, so a decode step spent about
//! 7 us a MoE layer hashing and copying it (device run 46: 0.21 us per KB of source
//! at encode). Written once to a file and pulled in with `#include "<path>"`, the
//! text is read by NVRTC at compile time only; per call MLX copies and hashes a
//! one-line include. The header goes to a file of its own (shared by a kernel's
//! variants), and so does each variant's body (its constants and code: an include
//! inside the kernel function is plain textual inclusion for NVRTC).
//!
//! The file name holds a 64-bit hash of the content, so a changed text gets a new
//! path (and MLX a new module key: no stale PTX from its disk cache), and the file's
//! content is compared before use. Files live in a per-user directory:
//! `$ZMLX_CACHE_DIR/cuda` (the cache directory zmlx's synthetic checkpoints use too),
//! else `$XDG_CACHE_HOME/zmlx/cuda`, else `$HOME/.cache/zmlx/cuda` (never a shared
//! temporary directory: anyone who could replace the file could change the kernel).
//! If no directory is usable the text stays inline, which gives the same kernel, only
//! more host time a call. `ZMLX_GPU_INLINE_HEADERS=1` keeps headers and bodies inline
//! (for A/B timing).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What to pass to MLX in place of `text` (a CUDA kernel's header or body): an
/// `#include` of a file holding it, or `text` itself when the file cannot be used.
pub(super) fn cuda_included(text: &str) -> String {
    if inline_requested() || text.is_empty() {
        return text.to_string();
    }
    cache_dir()
        .and_then(|dir| write_once(&dir, text))
        .and_then(|path| include_line(&path))
        .unwrap_or_else(|| text.to_string())
}

fn inline_requested() -> bool {
    matches!(std::env::var("ZMLX_GPU_INLINE_HEADERS").as_deref(), Ok("1"))
}

/// The per-user directory for the files (see the module docs).
fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(d) = var("ZMLX_CACHE_DIR") {
        // Made absolute: the include needs an absolute path.
        return std::path::absolute(PathBuf::from(d).join("cuda")).ok();
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("zmlx").join("cuda"));
    }
    var("HOME").map(|h| PathBuf::from(h).join(".cache").join("zmlx").join("cuda"))
}

/// FNV-1a, 64 bits: a content hash that stays the same across Rust versions and
/// processes (the file name must, for other processes to find the file).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The path of a file in `dir` holding exactly `content`, writing it if needed
/// (through a temporary file and a rename, so that a concurrent process never sees
/// a partial file).
fn write_once(dir: &Path, content: &str) -> Option<PathBuf> {
    let path = dir.join(format!(
        "zmlx-{:016x}-{}.cuh",
        fnv1a(content.as_bytes()),
        content.len()
    ));
    if fs::read(&path).ok().as_deref() == Some(content.as_bytes()) {
        return Some(path);
    }
    fs::create_dir_all(dir).ok()?;
    let tmp = dir.join(format!(
        ".zmlx-{}-{:016x}.tmp",
        std::process::id(),
        fnv1a(content.as_bytes())
    ));
    let written = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(content.as_bytes()).and_then(|_| f.sync_all()))
        .and_then(|_| fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return None;
    }
    // Read back: what NVRTC will read must be what the kernel was written for.
    (fs::read(&path).ok().as_deref() == Some(content.as_bytes())).then_some(path)
}

/// `#include "<path>"` plus a newline, for an absolute path that a quoted include can
/// hold; `None` otherwise.
fn include_line(path: &Path) -> Option<String> {
    let p = path.to_str()?;
    let plain = path.is_absolute() && !p.contains(['"', '\n', '\r', '\\']);
    plain.then(|| format!("#include \"{p}\"\n"))
}

#[cfg(test)]
mod tests {
    use super::{fnv1a, include_line, write_once};
    use std::path::Path;

    #[test]
    fn fnv1a_is_the_reference_function() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn header_files_are_written_once_and_checked() {
        let dir = std::env::temp_dir().join(format!("zmlx-header-test-{}", std::process::id()));
        let a = write_once(&dir, "int a;\n").expect("writable temp dir");
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "int a;\n");
        // Same content: same file. Other content: another file.
        assert_eq!(write_once(&dir, "int a;\n"), Some(a.clone()));
        let b = write_once(&dir, "int b;\n").unwrap();
        assert_ne!(a, b);
        // A file changed behind our back is rewritten before use.
        std::fs::write(&a, "int evil;\n").unwrap();
        assert_eq!(write_once(&dir, "int a;\n"), Some(a.clone()));
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "int a;\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn include_lines_only_for_plain_absolute_paths() {
        assert_eq!(
            include_line(Path::new("/home/u/.cache/zmlx/cuda/zmlx-1.cuh")).as_deref(),
            Some("#include \"/home/u/.cache/zmlx/cuda/zmlx-1.cuh\"\n")
        );
        assert_eq!(include_line(Path::new("relative/x.cuh")), None);
        assert_eq!(include_line(Path::new("/a\"b/x.cuh")), None);
        assert_eq!(include_line(Path::new("/a\nb/x.cuh")), None);
    }
}
