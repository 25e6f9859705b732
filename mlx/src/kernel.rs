//! Custom GPU kernels: MLX's `fast::metal_kernel` and `fast::cuda_kernel`.
//!
//! A kernel is built once from its body (MLX writes the signature from the input and
//! output names) and called many times with inputs, output shapes, a grid (in
//! threads) and a threadgroup size. On MLX builds without that backend, building or
//! calling returns an [`Error`].

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mlx_sys as sys;

use crate::array::Array;
use crate::device::StreamOrDevice;
use crate::dtype::Dtype;
use crate::error::{check, Error, Result};
use crate::ops::RawVec;

static CALL_TIMING: AtomicBool = AtomicBool::new(false);
static CALL_COUNT: AtomicU64 = AtomicU64::new(0);
static CALL_NANOS: AtomicU64 = AtomicU64::new(0);

/// Turns on (or off) the timing of [`CustomKernel::call`]'s time inside MLX (the C
/// shim and, on a launch not seen before, MLX's kernel call, which builds the kernel's
/// source and its graph node), for host-cost measurements; off by default, when a call
/// only reads one flag.
pub fn set_call_timing(on: bool) {
    CALL_TIMING.store(on, Ordering::Relaxed);
}

/// The kernel calls timed since the last take, and the time they spent inside MLX;
/// resets both.
pub fn take_call_timing() -> (u64, Duration) {
    let calls = CALL_COUNT.swap(0, Ordering::Relaxed);
    let nanos = CALL_NANOS.swap(0, Ordering::Relaxed);
    (calls, Duration::from_nanos(nanos))
}

/// Which GPU backend a kernel body is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelBackend {
    /// Metal Shading Language (Apple silicon).
    Metal,
    /// CUDA C++, compiled by NVRTC (NVIDIA).
    Cuda,
}

/// The source and interface of a custom kernel.
#[derive(Clone, Debug)]
pub struct KernelSource<'a> {
    /// The kernel's name (also its cache key inside MLX).
    pub name: &'a str,
    /// Names of the inputs, in call order, as the body refers to them.
    pub input_names: &'a [&'a str],
    /// Names of the outputs.
    pub output_names: &'a [&'a str],
    /// The body.
    pub source: &'a str,
    /// Code placed before the kernel (helpers, includes).
    pub header: &'a str,
    /// Make inputs row-contiguous before the call.
    pub ensure_row_contiguous: bool,
    /// Metal only: outputs are atomic.
    pub atomic_outputs: bool,
    /// CUDA only: dynamic shared memory in bytes.
    pub shared_memory: i32,
}

/// A template argument of a kernel call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateArg {
    /// An integer constant.
    Int(i32),
    /// A boolean constant.
    Bool(bool),
    /// A type.
    Dtype(Dtype),
}

/// The arguments of one kernel call.
#[derive(Clone, Debug)]
pub struct KernelLaunch<'a> {
    /// Inputs, in the order of `input_names`.
    pub inputs: &'a [&'a Array],
    /// Shape and dtype of each output.
    pub outputs: &'a [(&'a [i32], Dtype)],
    /// Grid size in threads (x, y, z).
    pub grid: [i32; 3],
    /// Threadgroup (block) size (x, y, z).
    pub threadgroup: [i32; 3],
    /// Template arguments by name.
    pub template_args: &'a [(&'a str, TemplateArg)],
    /// Fill outputs with this value before the kernel runs.
    pub init_value: Option<f32>,
    /// Print the generated source.
    pub verbose: bool,
}

impl<'a> KernelLaunch<'a> {
    /// A launch with no initial fill of the outputs and no printed source, the common
    /// case: `inputs` in the order of the kernel's `input_names`, one `(shape, dtype)`
    /// per output, `grid` and `threadgroup` in threads.
    pub fn new(
        inputs: &'a [&'a Array],
        outputs: &'a [(&'a [i32], Dtype)],
        grid: [i32; 3],
        threadgroup: [i32; 3],
        template_args: &'a [(&'a str, TemplateArg)],
    ) -> KernelLaunch<'a> {
        KernelLaunch {
            inputs,
            outputs,
            grid,
            threadgroup,
            template_args,
            init_value: None,
            verbose: false,
        }
    }
}

/// A compiled-on-demand custom kernel.
pub struct CustomKernel {
    raw: sys::mlxs_kernel,
    name: String,
    n_inputs: usize,
    n_outputs: usize,
}

// SAFETY: the handle wraps an immutable std::function that MLX calls from any thread.
unsafe impl Send for CustomKernel {}
unsafe impl Sync for CustomKernel {}

fn cstrings(op: &'static str, items: &[&str]) -> Result<Vec<CString>> {
    items
        .iter()
        .map(|s| {
            CString::new(*s).map_err(|_| Error::invalid(op, format!("{s:?} contains a NUL byte")))
        })
        .collect()
}

impl CustomKernel {
    /// Builds a kernel for `backend` from `src`.
    ///
    /// # Errors
    /// When a string holds a NUL byte or MLX refuses the kernel.
    #[track_caller]
    pub fn new(backend: KernelBackend, src: &KernelSource<'_>) -> Result<CustomKernel> {
        let name = cstrings("kernel", &[src.name])?.remove(0);
        let ins = cstrings("kernel", src.input_names)?;
        let outs = cstrings("kernel", src.output_names)?;
        let body = cstrings("kernel", &[src.source, src.header])?;
        let in_ptrs: Vec<_> = ins.iter().map(|s| s.as_ptr()).collect();
        let out_ptrs: Vec<_> = outs.iter().map(|s| s.as_ptr()).collect();
        let code = match backend {
            KernelBackend::Metal => sys::MLXS_KERNEL_METAL,
            KernelBackend::Cuda => sys::MLXS_KERNEL_CUDA,
        } as i32;
        let mut raw: sys::mlxs_kernel = std::ptr::null_mut();
        // SAFETY: all strings are NUL-terminated and outlive the call; MLX copies them.
        check(unsafe {
            sys::mlxs_kernel_new(
                &mut raw,
                code,
                name.as_ptr(),
                in_ptrs.as_ptr(),
                in_ptrs.len(),
                out_ptrs.as_ptr(),
                out_ptrs.len(),
                body[0].as_ptr(),
                body[1].as_ptr(),
                src.ensure_row_contiguous,
                src.atomic_outputs,
                src.shared_memory,
            )
        })?;
        Ok(CustomKernel {
            raw,
            name: src.name.to_string(),
            n_inputs: src.input_names.len(),
            n_outputs: src.output_names.len(),
        })
    }

    /// Queues one call (lazily, like any op) and returns its outputs.
    ///
    /// The first call of a launch (stream, input and output dtypes, grid, threadgroup,
    /// fill value, template arguments) has MLX build the kernel's graph node; later
    /// calls with the same launch reuse it, so that a decode loop does not pay MLX's
    /// source assembly on every call. A kernel keeps the nodes of its 32 latest
    /// launches.
    ///
    /// # Errors
    /// On a wrong number of inputs or outputs, a non-positive grid or threadgroup,
    /// or when MLX cannot run the kernel (e.g. a CUDA kernel on the CPU backend).
    #[track_caller]
    pub fn call(
        &self,
        launch: &KernelLaunch<'_>,
        s: impl Into<StreamOrDevice>,
    ) -> Result<Vec<Array>> {
        if launch.inputs.len() != self.n_inputs || launch.outputs.len() != self.n_outputs {
            return Err(Error::invalid(
                "kernel",
                format!(
                    "{} takes {} inputs and {} outputs, got {} and {}",
                    self.name,
                    self.n_inputs,
                    self.n_outputs,
                    launch.inputs.len(),
                    launch.outputs.len()
                ),
            ));
        }
        if launch
            .grid
            .iter()
            .chain(&launch.threadgroup)
            .any(|&d| d < 1)
        {
            return Err(Error::invalid(
                "kernel",
                "grid and threadgroup sizes must be at least 1",
            ));
        }
        let inputs: Vec<_> = launch.inputs.iter().map(|a| a.as_raw()).collect();
        let shapes: Vec<i32> = launch
            .outputs
            .iter()
            .flat_map(|(s, _)| s.iter().copied())
            .collect();
        let ndims: Vec<usize> = launch.outputs.iter().map(|(s, _)| s.len()).collect();
        let dtypes: Vec<i32> = launch.outputs.iter().map(|(_, d)| d.code()).collect();
        let names = cstrings(
            "kernel",
            &launch
                .template_args
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>(),
        )?;
        let targs: Vec<sys::mlxs_template_arg> = launch
            .template_args
            .iter()
            .zip(&names)
            .map(|((_, v), n)| {
                let (kind, value) = match *v {
                    TemplateArg::Int(i) => (sys::MLXS_TEMPLATE_INT, i),
                    TemplateArg::Bool(b) => (sys::MLXS_TEMPLATE_BOOL, b as i32),
                    TemplateArg::Dtype(d) => (sys::MLXS_TEMPLATE_DTYPE, d.code()),
                };
                sys::mlxs_template_arg {
                    name: n.as_ptr(),
                    kind: kind as i32,
                    value,
                }
            })
            .collect();
        let out = RawVec::new()?;
        let started = CALL_TIMING.load(Ordering::Relaxed).then(Instant::now);
        // SAFETY: every pointer refers to a live buffer of the stated length.
        let status = check(unsafe {
            sys::mlxs_kernel_call(
                out.0,
                self.raw,
                inputs.as_ptr(),
                inputs.len(),
                shapes.as_ptr(),
                ndims.as_ptr(),
                dtypes.as_ptr(),
                dtypes.len(),
                launch.grid.as_ptr(),
                launch.threadgroup.as_ptr(),
                targs.as_ptr(),
                targs.len(),
                launch.init_value.is_some(),
                launch.init_value.unwrap_or(0.0),
                launch.verbose,
                s.into().raw(),
            )
        });
        if let Some(t) = started {
            CALL_COUNT.fetch_add(1, Ordering::Relaxed);
            CALL_NANOS.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        status?;
        out.into_arrays()
    }
}

impl Drop for CustomKernel {
    fn drop(&mut self) {
        // SAFETY: owned handle.
        unsafe { sys::mlxs_kernel_free(self.raw) }
    }
}
