// Custom GPU kernels (MLX's fast::metal_kernel and fast::cuda_kernel).
#include "shim_common.hpp"

using namespace shim;

struct mlxs_kernel_ {
  mx::fast::CustomKernelFunction fn;
};

extern "C" {

int mlxs_kernel_new(mlxs_kernel* out, int backend, const char* name,
                    const char* const* input_names, size_t n_inputs,
                    const char* const* output_names, size_t n_outputs, const char* source,
                    const char* header, bool ensure_row_contiguous, bool atomic_outputs,
                    int32_t shared_memory) {
  return guard([&] {
    std::vector<std::string> ins(input_names, input_names + n_inputs);
    std::vector<std::string> outs(output_names, output_names + n_outputs);
    std::string hdr = header == nullptr ? "" : header;
    mx::fast::CustomKernelFunction fn;
    if (backend == MLXS_KERNEL_METAL) {
      fn = mx::fast::metal_kernel(name, ins, outs, source, hdr, ensure_row_contiguous,
                                  atomic_outputs);
    } else if (backend == MLXS_KERNEL_CUDA) {
      fn = mx::fast::cuda_kernel(name, ins, outs, source, hdr, ensure_row_contiguous,
                                 shared_memory);
    } else {
      throw std::invalid_argument("[kernel] unknown backend code " + std::to_string(backend));
    }
    *out = new mlxs_kernel_{std::move(fn)};
  });
}

void mlxs_kernel_free(mlxs_kernel k) {
  delete k;
}

int mlxs_kernel_call(mlxs_vec out, mlxs_kernel k, const mlxs_array* inputs, size_t n_inputs,
                     const int32_t* out_shapes, const size_t* out_ndims, const int* out_dtypes,
                     size_t n_outputs, const int32_t grid[3], const int32_t threadgroup[3],
                     const mlxs_template_arg* template_args, size_t n_template_args,
                     bool has_init_value, float init_value, bool verbose, mlxs_sod s) {
  return guard([&] {
    std::vector<mx::Shape> shapes;
    std::vector<mx::Dtype> dtypes;
    size_t offset = 0;
    for (size_t i = 0; i < n_outputs; i++) {
      shapes.push_back(shape_from(out_shapes + offset, out_ndims[i]));
      offset += out_ndims[i];
      dtypes.push_back(dtype_from(out_dtypes[i]));
    }
    std::vector<std::pair<std::string, mx::fast::TemplateArg>> targs;
    for (size_t i = 0; i < n_template_args; i++) {
      const auto& t = template_args[i];
      switch (t.kind) {
        case MLXS_TEMPLATE_INT: targs.emplace_back(t.name, static_cast<int>(t.value)); break;
        case MLXS_TEMPLATE_BOOL: targs.emplace_back(t.name, t.value != 0); break;
        case MLXS_TEMPLATE_DTYPE: targs.emplace_back(t.name, dtype_from(t.value)); break;
        default: throw std::invalid_argument("[kernel] unknown template argument kind");
      }
    }
    std::optional<float> init =
        has_init_value ? std::optional<float>(init_value) : std::nullopt;
    out->v = k->fn(arrays(inputs, n_inputs), shapes, dtypes,
                   {grid[0], grid[1], grid[2]}, {threadgroup[0], threadgroup[1], threadgroup[2]},
                   targs, init, verbose, sod(s));
  });
}

}  // extern "C"
