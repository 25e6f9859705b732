//! A kernel and its compiled variants: on CUDA one MLX kernel object per set of
//! template arguments, with the arguments written into the body as constants.
//!
//! MLX's `fast::cuda_kernel` call formats every template argument twice on every
//! call (into the kernel name and into the source, with `fmt::format`) and rebuilds
//! the source string around them, although only the first call of a variant
//! compiles anything. Here each variant's source is written once: the body starts
//! with the same `constexpr int N = v;` / `constexpr bool B = v;` / `using T =
//! <type>;` lines MLX would write, and the call passes no template arguments, so a
//! decode step's calls skip that work (device run 46: a custom kernel cost 3-10 us of
//! graph building against under 1 us for MLX's own ops). The body itself then goes
//! to a file that the source MLX sees includes (header_file.rs). The compiled code
//! is the same. Metal keeps MLX's template arguments (it instantiates a template
//! there).

use std::sync::Mutex;

use mlx::kernel::{CustomKernel, KernelBackend, KernelLaunch, KernelSource, TemplateArg};
use mlx::{Array, Dtype, Error, Result, StreamOrDevice};

/// What a kernel is built from; the strings are the final ones (minified, header
/// possibly an `#include`).
pub(super) struct FamilySource {
    pub backend: KernelBackend,
    pub name: &'static str,
    pub inputs: &'static [&'static str],
    pub outputs: &'static [&'static str],
    pub body: String,
    pub header: String,
}

/// One CUDA variant: its template arguments and its kernel object.
type Variant = (Vec<(String, TemplateArg)>, &'static CustomKernel);

/// A kernel with one MLX kernel object per variant (CUDA) or one for all (Metal).
pub(super) struct KernelFamily {
    src: FamilySource,
    /// Metal: the single object, which takes template arguments per call.
    shared: Option<CustomKernel>,
    /// CUDA: the variants built so far (a handful per process; each object is kept
    /// for the life of the process, as MLX keeps the compiled module).
    variants: Mutex<Vec<Variant>>,
}

impl KernelFamily {
    /// A family for `src`; on Metal the kernel object is built now.
    pub fn new(src: FamilySource) -> Result<KernelFamily> {
        let shared = match src.backend {
            KernelBackend::Metal => Some(build(&src, &src.body)?),
            KernelBackend::Cuda => None,
        };
        Ok(KernelFamily {
            src,
            shared,
            variants: Mutex::new(Vec::new()),
        })
    }

    /// Queues one call of the variant `launch.template_args` names. With
    /// [`CudaVariants::with_poisoned_outputs`](super::CudaVariants) the outputs start
    /// as NaN, so that a kernel that leaves an output unwritten cannot pass a check on
    /// values MLX's allocator happened to recycle.
    ///
    /// # Errors
    /// When MLX refuses the kernel or the call, or a template argument is a dtype
    /// CUDA code has no type for.
    pub fn call(&self, launch: &KernelLaunch<'_>, s: StreamOrDevice) -> Result<Vec<Array>> {
        let poison =
            super::current_cuda_variants().poisoned_outputs() && launch.init_value.is_none();
        let launch = KernelLaunch {
            init_value: if poison {
                Some(f32::NAN)
            } else {
                launch.init_value
            },
            ..launch.clone()
        };
        if let Some(k) = &self.shared {
            return k.call(&launch, s);
        }
        let kernel = self.variant(launch.template_args)?;
        kernel.call(
            &KernelLaunch {
                template_args: &[],
                ..launch
            },
            s,
        )
    }

    /// The kernel object for `args`, built on first use.
    fn variant(&self, args: &[(&str, TemplateArg)]) -> Result<&'static CustomKernel> {
        let mut variants = self.variants.lock().unwrap_or_else(|e| e.into_inner());
        let same = |have: &[(String, TemplateArg)]| {
            have.len() == args.len()
                && have
                    .iter()
                    .zip(args)
                    .all(|((hn, hv), (n, v))| hn == n && hv == v)
        };
        if let Some((_, k)) = variants.iter().find(|(have, _)| same(have)) {
            return Ok(k);
        }
        let mut body = constants(args)?;
        body.push_str(&self.src.body);
        // The variant's body as an include too (header_file.rs): per call MLX then
        // copies and hashes a one-line body instead of the kernel's code. Not for a
        // body that reads an input's `_shape`, `_strides` or `_ndim`: MLX adds those
        // parameters only when it finds the names in the body it is given.
        let body = if reads_shape_info(&body, self.src.inputs) {
            body
        } else {
            super::header_file::cuda_included(&body)
        };
        let kernel: &'static CustomKernel = Box::leak(Box::new(build(&self.src, &body)?));
        let key = args.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        variants.push((key, kernel));
        Ok(kernel)
    }
}

fn build(src: &FamilySource, body: &str) -> Result<CustomKernel> {
    CustomKernel::new(
        src.backend,
        &KernelSource {
            name: src.name,
            input_names: src.inputs,
            output_names: src.outputs,
            source: body,
            header: &src.header,
            ensure_row_contiguous: true,
            atomic_outputs: false,
            shared_memory: 0,
        },
    )
}

/// Whether `body` uses one of the shape parameters MLX generates for an input.
fn reads_shape_info(body: &str, inputs: &[&str]) -> bool {
    inputs.iter().any(|n| {
        ["_shape", "_strides", "_ndim"]
            .iter()
            .any(|suffix| body.contains(&format!("{n}{suffix}")))
    })
}

/// The lines MLX's CUDA custom kernels write for template arguments (at the top of
/// the kernel's body), one per argument.
fn constants(args: &[(&str, TemplateArg)]) -> Result<String> {
    let mut out = String::new();
    for (name, v) in args {
        let line = match v {
            TemplateArg::Int(i) => format!("constexpr int {name} = {i};\n"),
            TemplateArg::Bool(b) => format!("constexpr bool {name} = {b};\n"),
            TemplateArg::Dtype(d) => format!("using {name} = {};\n", cuda_type(*d)?),
        };
        out.push_str(&line);
    }
    Ok(out)
}

/// The CUDA type MLX's CUDA backend uses for `d`.
fn cuda_type(d: Dtype) -> Result<&'static str> {
    Ok(match d {
        Dtype::Bool => "bool",
        Dtype::Uint8 => "uint8_t",
        Dtype::Uint16 => "uint16_t",
        Dtype::Uint32 => "uint32_t",
        Dtype::Uint64 => "uint64_t",
        Dtype::Int8 => "int8_t",
        Dtype::Int16 => "int16_t",
        Dtype::Int32 => "int32_t",
        Dtype::Int64 => "int64_t",
        Dtype::Float16 => "__half",
        Dtype::Bfloat16 => "__nv_bfloat16",
        Dtype::Float32 => "float",
        Dtype::Float64 => "double",
        Dtype::Complex64 => {
            return Err(Error::invalid(
                "kernel",
                "complex64 template arguments (the CUDA kernels take real types)",
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{constants, reads_shape_info};
    use mlx::kernel::TemplateArg;
    use mlx::Dtype;

    #[test]
    fn constants_are_the_lines_mlx_writes() {
        let got = constants(&[
            ("T", TemplateArg::Dtype(Dtype::Bfloat16)),
            ("BITS", TemplateArg::Int(4)),
            ("NEG", TemplateArg::Int(-3)),
            ("NORM", TemplateArg::Bool(true)),
            ("OFF", TemplateArg::Bool(false)),
            ("U", TemplateArg::Dtype(Dtype::Float16)),
        ])
        .unwrap();
        assert_eq!(
            got,
            "using T = __nv_bfloat16;\nconstexpr int BITS = 4;\nconstexpr int NEG = -3;\n\
             constexpr bool NORM = true;\nconstexpr bool OFF = false;\nusing U = __half;\n"
        );
        assert!(constants(&[("C", TemplateArg::Dtype(Dtype::Complex64))]).is_err());
    }

    #[test]
    fn shape_parameters_are_found() {
        let inputs = ["x_in", "w"];
        assert!(reads_shape_info("int n = x_in_shape[0];", &inputs));
        assert!(reads_shape_info("w_ndim", &inputs));
        assert!(!reads_shape_info("x_in[0] + w[1]; y_shape", &inputs));
    }
}
