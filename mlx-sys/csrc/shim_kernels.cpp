// Custom GPU kernels (MLX's fast::metal_kernel and fast::cuda_kernel).
#include <cstring>
#include <memory>
#include <mutex>

#include "shim_common.hpp"

using namespace shim;

namespace {

// A graph node of a kernel, kept for reuse by later calls with the same launch.
//
// Each call of MLX's kernel function assembles the kernel's whole source (header,
// signature from the input and output dtypes, constants, body) and makes a new
// CustomKernel primitive holding it: on an H100 host ~2 us a call (device run 63),
// several times what one of MLX's own ops costs to build. Only the outputs' shapes
// and the inputs differ between the calls of a decode step, and neither is part of
// the primitive (they are the arrays' own), so the primitive of the first call
// serves every later call whose key matches; MLX's primitives hold no per-node
// state, which is why its multi-output ops share one among their outputs.
struct NodeTemplate {
  std::string key;
  std::shared_ptr<mx::Primitive> primitive;
};

// At most this many launches a kernel keeps (a prefill of a new length is a new
// grid, so a new key); when full, the oldest goes.
constexpr size_t kMaxTemplates = 32;

template <class T>
void put(std::string& key, const T& v) {
  key.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

// Everything of a call that MLX writes into the primitive: the stream, what the
// generated signature depends on (each input's dtype and whether it has a shape,
// the outputs' dtypes), grid, threadgroup, fill value and template arguments.
std::string node_key(const mx::Stream& stream, const std::vector<mx::array>& inputs,
                     const int* out_dtypes, size_t n_outputs, const int32_t grid[3],
                     const int32_t threadgroup[3], const mlxs_template_arg* template_args,
                     size_t n_template_args, bool has_init_value, float init_value) {
  std::string key;
  key.reserve(64 + 8 * inputs.size() + 32 * n_template_args);
  put(key, stream.index);
  put(key, static_cast<int>(stream.device.type));
  put(key, stream.device.index);
  put(key, inputs.size());
  for (const auto& a : inputs) {
    put(key, dtype_code(a.dtype()) * 2 + (a.ndim() > 0 ? 1 : 0));
  }
  put(key, n_outputs);
  for (size_t i = 0; i < n_outputs; i++) {
    put(key, out_dtypes[i]);
  }
  for (int i = 0; i < 3; i++) {
    put(key, grid[i]);
    put(key, threadgroup[i]);
  }
  put(key, has_init_value);
  if (has_init_value) {
    uint32_t bits;
    std::memcpy(&bits, &init_value, sizeof bits);
    put(key, bits);
  }
  put(key, n_template_args);
  for (size_t i = 0; i < n_template_args; i++) {
    const auto& t = template_args[i];
    put(key, t.kind);
    put(key, t.value);
    key += t.name;
    key.push_back('\0');
  }
  return key;
}

}  // namespace

struct mlxs_kernel_ {
  mx::fast::CustomKernelFunction fn;
  std::mutex mutex;
  std::vector<NodeTemplate> nodes;
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
    auto k = std::make_unique<mlxs_kernel_>();
    k->fn = std::move(fn);
    *out = k.release();
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
    shapes.reserve(n_outputs);
    dtypes.reserve(n_outputs);
    size_t offset = 0;
    for (size_t i = 0; i < n_outputs; i++) {
      shapes.push_back(shape_from(out_shapes + offset, out_ndims[i]));
      offset += out_ndims[i];
      dtypes.push_back(dtype_from(out_dtypes[i]));
    }
    auto ins = arrays(inputs, n_inputs);
    auto stream = mx::to_stream(sod(s));
    // A printing call goes through MLX's function, which prints the source it builds.
    std::string key;
    if (!verbose) {
      key = node_key(stream, ins, out_dtypes, n_outputs, grid, threadgroup, template_args,
                     n_template_args, has_init_value, init_value);
      std::shared_ptr<mx::Primitive> primitive;
      {
        std::lock_guard<std::mutex> lock(k->mutex);
        for (const auto& n : k->nodes) {
          if (n.key == key) {
            primitive = n.primitive;
            break;
          }
        }
      }
      if (primitive) {
        out->v = mx::array::make_arrays(std::move(shapes), dtypes, primitive, ins);
        return;
      }
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
    out->v = k->fn(ins, shapes, dtypes, {grid[0], grid[1], grid[2]},
                   {threadgroup[0], threadgroup[1], threadgroup[2]}, targs, init, verbose,
                   stream);
    if (!verbose && !out->v.empty() && out->v[0].has_primitive()) {
      std::lock_guard<std::mutex> lock(k->mutex);
      if (k->nodes.size() >= kMaxTemplates) {
        k->nodes.erase(k->nodes.begin());
      }
      k->nodes.push_back({std::move(key), out->v[0].primitive_ptr()});
    }
  });
}

}  // extern "C"
