// Fast ops (norms, RoPE, attention) and quantization.
#include "shim_common.hpp"

using namespace shim;

namespace {
std::string mode_or_affine(const char* mode) {
  return mode == nullptr ? std::string("affine") : std::string(mode);
}
}  // namespace

extern "C" {

int mlxs_fast_rms_norm(mlxs_array* out, mlxs_array x, mlxs_array weight, float eps, mlxs_sod s) {
  return guard([&] { *out = wrap(mx::fast::rms_norm(A(x), opt(weight), eps, sod(s))); });
}

int mlxs_fast_layer_norm(mlxs_array* out, mlxs_array x, mlxs_array weight, mlxs_array bias,
                         float eps, mlxs_sod s) {
  return guard([&] {
    *out = wrap(mx::fast::layer_norm(A(x), opt(weight), opt(bias), eps, sod(s)));
  });
}

int mlxs_fast_rope(mlxs_array* out, mlxs_array x, int32_t dims, bool traditional, bool has_base,
                   float base, float scale, int32_t offset, mlxs_array freqs, mlxs_sod s) {
  return guard([&] {
    std::optional<float> b = has_base ? std::optional<float>(base) : std::nullopt;
    *out = wrap(mx::fast::rope(A(x), dims, traditional, b, scale, offset, opt(freqs), sod(s)));
  });
}

int mlxs_fast_sdpa(mlxs_array* out, mlxs_array q, mlxs_array k, mlxs_array v, float scale,
                   const char* mask_mode, mlxs_array mask, mlxs_sod s) {
  return guard([&] {
    std::string mode = mask_mode == nullptr ? "" : mask_mode;
    *out = wrap(mx::fast::scaled_dot_product_attention(A(q), A(k), A(v), scale, mode, opt(mask),
                                                       std::nullopt, false, sod(s)));
  });
}

int mlxs_quantize(mlxs_vec out, mlxs_array w, int32_t group_size, int32_t bits, const char* mode,
                  mlxs_sod s) {
  return guard([&] {
    out->v = mx::quantize(A(w), group_size, bits, mode_or_affine(mode), std::nullopt, sod(s));
  });
}

int mlxs_dequantize(mlxs_array* out, mlxs_array w, mlxs_array scales, mlxs_array biases,
                    int32_t group_size, int32_t bits, const char* mode, int dtype, mlxs_sod s) {
  return guard([&] {
    std::optional<mx::Dtype> dt =
        dtype < 0 ? std::nullopt : std::optional<mx::Dtype>(dtype_from(dtype));
    *out = wrap(mx::dequantize(A(w), A(scales), opt(biases), group_size, bits,
                               mode_or_affine(mode), std::nullopt, dt, sod(s)));
  });
}

int mlxs_quantized_matmul(mlxs_array* out, mlxs_array x, mlxs_array w, mlxs_array scales,
                          mlxs_array biases, bool transpose, int32_t group_size, int32_t bits,
                          const char* mode, mlxs_sod s) {
  return guard([&] {
    *out = wrap(mx::quantized_matmul(A(x), A(w), A(scales), opt(biases), transpose, group_size,
                                     bits, mode_or_affine(mode), sod(s)));
  });
}

int mlxs_gather_qmm(mlxs_array* out, mlxs_array x, mlxs_array w, mlxs_array scales,
                    mlxs_array biases, mlxs_array lhs_indices, mlxs_array rhs_indices,
                    bool transpose, int32_t group_size, int32_t bits, const char* mode,
                    bool sorted_indices, mlxs_sod s) {
  return guard([&] {
    *out = wrap(mx::gather_qmm(A(x), A(w), A(scales), opt(biases), opt(lhs_indices),
                               opt(rhs_indices), transpose, group_size, bits,
                               mode_or_affine(mode), std::nullopt, sorted_indices, sod(s)));
  });
}

int mlxs_gather_mm(mlxs_array* out, mlxs_array a, mlxs_array b, mlxs_array lhs_indices,
                   mlxs_array rhs_indices, bool sorted_indices, mlxs_sod s) {
  return guard([&] {
    *out = wrap(mx::gather_mm(A(a), A(b), opt(lhs_indices), opt(rhs_indices), sorted_indices,
                              sod(s)));
  });
}

}  // extern "C"
