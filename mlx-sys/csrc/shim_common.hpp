// Shared helpers of the C shim: handle types, the exception guard, argument conversion.
#pragma once

#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include "mlx/mlx.h"
#include "mlx_shim.h"

namespace mx = mlx::core;

struct mlxs_array_ {
  mx::array a;
};
struct mlxs_vec_ {
  std::vector<mx::array> v;
};

namespace shim {

// The last error message of this thread; mlxs_last_error() returns it.
std::string& last_error();

// Runs f, turning any C++ exception into status 1 and a kept message.
template <class F>
int guard(F&& f) noexcept {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error() = e.what();
  } catch (...) {
    last_error() = "unknown C++ exception";
  }
  return 1;
}

inline mlxs_array wrap(mx::array a) {
  return new mlxs_array_{std::move(a)};
}

inline const mx::array& A(mlxs_array a) {
  if (a == nullptr) {
    throw std::invalid_argument("[mlx-sys] null array handle");
  }
  return a->a;
}

inline std::optional<mx::array> opt(mlxs_array a) {
  if (a == nullptr) {
    return std::nullopt;
  }
  return a->a;
}

inline mx::Dtype dtype_from(int code) {
  using V = mx::Dtype::Val;
  switch (code) {
    case MLXS_BOOL: return mx::bool_;
    case MLXS_UINT8: return mx::uint8;
    case MLXS_UINT16: return mx::uint16;
    case MLXS_UINT32: return mx::uint32;
    case MLXS_UINT64: return mx::uint64;
    case MLXS_INT8: return mx::int8;
    case MLXS_INT16: return mx::int16;
    case MLXS_INT32: return mx::int32;
    case MLXS_INT64: return mx::int64;
    case MLXS_FLOAT16: return mx::float16;
    case MLXS_FLOAT32: return mx::float32;
    case MLXS_FLOAT64: return mx::float64;
    case MLXS_BFLOAT16: return mx::bfloat16;
    case MLXS_COMPLEX64: return mx::complex64;
  }
  (void)sizeof(V);
  throw std::invalid_argument("[mlx-sys] unknown dtype code " + std::to_string(code));
}

inline int dtype_code(mx::Dtype d) {
  return static_cast<int>(d.val());
}

inline mx::Device device_from(int32_t type, int32_t index) {
  if (type != MLXS_CPU && type != MLXS_GPU) {
    throw std::invalid_argument("[mlx-sys] unknown device type " + std::to_string(type));
  }
  return mx::Device(type == MLXS_GPU ? mx::Device::gpu : mx::Device::cpu, index);
}

inline mx::StreamOrDevice sod(mlxs_sod s) {
  switch (s.kind) {
    case MLXS_SOD_DEFAULT: return {};
    case MLXS_SOD_DEVICE: return device_from(s.device_type, s.device_index);
    case MLXS_SOD_STREAM:
      return mx::Stream(s.stream_index, device_from(s.device_type, s.device_index));
  }
  throw std::invalid_argument("[mlx-sys] unknown stream-or-device kind");
}

inline mx::Shape shape_from(const int32_t* shape, size_t ndim) {
  return mx::Shape(shape, shape + ndim);
}

inline std::vector<int> ints(const int32_t* p, size_t n) {
  return std::vector<int>(p, p + n);
}

inline std::vector<mx::array> arrays(const mlxs_array* p, size_t n) {
  std::vector<mx::array> v;
  v.reserve(n);
  for (size_t i = 0; i < n; i++) {
    v.push_back(A(p[i]));
  }
  return v;
}

inline char* dup_string(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out == nullptr) {
    throw std::bad_alloc();
  }
  std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

}  // namespace shim
