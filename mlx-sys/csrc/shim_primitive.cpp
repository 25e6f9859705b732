// A custom CPU primitive whose evaluation calls back into the caller (Rust).
#include "mlx/backend/cpu/encoder.h"
#include "mlx/primitives.h"
#include "shim_common.hpp"

using namespace shim;

namespace {

// Owns the caller's context; released once no primitive or queued task uses it.
struct CallbackKernel {
  CallbackKernel(mlxs_cpu_kernel_fn f, void* c, void (*d)(void*)) : fn(f), ctx(c), drop(d) {}
  CallbackKernel(const CallbackKernel&) = delete;
  CallbackKernel& operator=(const CallbackKernel&) = delete;
  mlxs_cpu_kernel_fn fn;
  void* ctx;
  void (*drop)(void*);
  ~CallbackKernel() {
    if (drop != nullptr) {
      drop(ctx);
    }
  }
};

// Small fixed-size staging for buffer descriptors: no heap allocation per call for the
// common case of a few inputs and outputs.
constexpr size_t kInlineBuffers = 16;

void describe(const mx::array& a, mlxs_buffer& b) {
  b.data = const_cast<void*>(static_cast<const void*>(a.data<char>()));
  b.shape = a.shape().data();
  b.ndim = a.ndim();
  b.size = a.size();
  b.dtype = dtype_code(a.dtype());
}

class CallbackPrimitive : public mx::Primitive {
 public:
  CallbackPrimitive(mx::Stream stream, std::string name, std::string params,
                    std::shared_ptr<CallbackKernel> kernel)
      : mx::Primitive(stream),
        name_(std::move(name)),
        params_(std::move(params)),
        kernel_(std::move(kernel)) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    for (auto& o : outputs) {
      o.set_data(mx::allocator::malloc(o.nbytes()));
    }
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (auto& in : inputs) {
      encoder.set_input_array(in);
    }
    for (auto& o : outputs) {
      encoder.set_output_array(o);
    }
    encoder.dispatch([ins = inputs, outs = outputs, kernel = kernel_, name = name_]() mutable {
      std::array<mlxs_buffer, kInlineBuffers> in_inline;
      std::array<mlxs_buffer, kInlineBuffers> out_inline;
      std::vector<mlxs_buffer> in_heap, out_heap;
      mlxs_buffer* in_bufs = in_inline.data();
      mlxs_buffer* out_bufs = out_inline.data();
      if (ins.size() > kInlineBuffers) {
        in_heap.resize(ins.size());
        in_bufs = in_heap.data();
      }
      if (outs.size() > kInlineBuffers) {
        out_heap.resize(outs.size());
        out_bufs = out_heap.data();
      }
      for (size_t i = 0; i < ins.size(); i++) {
        describe(ins[i], in_bufs[i]);
      }
      for (size_t i = 0; i < outs.size(); i++) {
        describe(outs[i], out_bufs[i]);
      }
      char err[1024] = {0};
      int rc = kernel->fn(kernel->ctx, in_bufs, ins.size(), out_bufs, outs.size(), err,
                          sizeof(err));
      if (rc != 0) {
        // MLX reports a failed task once; arrays downstream may still be read later.
        // All-ones bytes make such reads visible (NaN for floats, -1 for integers)
        // instead of returning uninitialised memory.
        for (size_t i = 0; i < outs.size(); i++) {
          std::memset(out_bufs[i].data, 0xFF, outs[i].nbytes());
        }
        throw std::runtime_error("[" + name + "] " + err);
      }
    });
  }

  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("[" + name_ +
                             "] is a CPU primitive and has no GPU implementation; run it on a "
                             "CPU stream");
  }

  const char* name() const override {
    return name_.c_str();
  }

  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const CallbackPrimitive*>(&other);
    return o != nullptr && o->name_ == name_ && o->params_ == params_;
  }

 private:
  std::string name_;
  std::string params_;
  std::shared_ptr<CallbackKernel> kernel_;
};

}  // namespace

extern "C" {

int mlxs_cpu_primitive(mlxs_vec out, const char* name, const uint8_t* params, size_t params_len,
                       mlxs_cpu_kernel_fn fn, void* ctx, void (*drop)(void*),
                       const mlxs_array* inputs, size_t n_inputs, const int32_t* out_shapes,
                       const size_t* out_ndims, const int* out_dtypes, size_t n_outputs,
                       mlxs_sod s) {
  // The context is owned from here on, also when building the primitive fails.
  auto kernel = std::make_shared<CallbackKernel>(fn, ctx, drop);
  return guard([&] {
    if (n_outputs == 0) {
      throw std::invalid_argument(std::string("[") + name + "] needs at least one output");
    }
    auto stream = mx::to_stream(sod(s));
    std::vector<mx::array> ins;
    ins.reserve(n_inputs);
    for (size_t i = 0; i < n_inputs; i++) {
      // Free when already row-contiguous; copies views and broadcasts.
      ins.push_back(mx::contiguous(A(inputs[i]), false, stream));
    }
    std::vector<mx::Shape> shapes;
    std::vector<mx::Dtype> dtypes;
    size_t offset = 0;
    for (size_t i = 0; i < n_outputs; i++) {
      shapes.push_back(shape_from(out_shapes + offset, out_ndims[i]));
      offset += out_ndims[i];
      dtypes.push_back(dtype_from(out_dtypes[i]));
    }
    std::string p(reinterpret_cast<const char*>(params), params_len);
    auto prim = std::make_shared<CallbackPrimitive>(stream, name, std::move(p), kernel);
    out->v = mx::array::make_arrays(std::move(shapes), std::move(dtypes), prim, std::move(ins));
  });
}

}  // extern "C"
