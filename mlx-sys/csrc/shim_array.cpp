// Arrays, vectors of arrays, devices and streams.
#include <sstream>

#include "mlx/backend/cuda/cuda.h"
#include "mlx/backend/gpu/device_info.h"
#include "mlx/backend/metal/metal.h"
#include "shim_common.hpp"

using namespace shim;

std::string& shim::last_error() {
  thread_local std::string msg;
  return msg;
}

extern "C" {

const char* mlxs_last_error(void) {
  return last_error().c_str();
}

const char* mlxs_version(void) {
  return mx::version();
}

void mlxs_string_free(char* s) {
  std::free(s);
}

int mlxs_array_from_data(mlxs_array* out, const void* data, const int32_t* shape, size_t ndim,
                         int dtype) {
  return guard([&] {
    auto dt = dtype_from(dtype);
    auto shp = shape_from(shape, ndim);
    size_t n = 1;
    for (auto d : shp) {
      if (d < 0) {
        throw std::invalid_argument("[array] negative dimension in shape");
      }
      n *= static_cast<size_t>(d);
    }
    // Copy the host bytes into an MLX-owned buffer so the caller keeps its memory.
    auto buf = mx::allocator::malloc(n * dt.size());
    if (n > 0) {
      std::memcpy(buf.buffer().raw_ptr(), data, n * dt.size());
    }
    *out = wrap(mx::array(std::move(buf), std::move(shp), dt));
  });
}

int mlxs_array_from_f64(mlxs_array* out, double v, int dtype) {
  return guard([&] {
    auto dt = dtype_from(dtype);
    // The value is converted to dt on the host: the result is a constant, not a graph node.
    if (dt == mx::float64) {
      *out = wrap(mx::array(v, dt));
    } else if (mx::issubdtype(dt, mx::floating)) {
      *out = wrap(mx::array(static_cast<float>(v), dt));
    } else if (dt == mx::bool_) {
      *out = wrap(mx::array(v != 0.0, dt));
    } else if (dt == mx::complex64) {
      *out = wrap(mx::array(std::complex<float>(static_cast<float>(v), 0.0f), dt));
    } else {
      *out = wrap(mx::array(static_cast<int64_t>(v), dt));
    }
  });
}

int mlxs_array_clone(mlxs_array* out, mlxs_array a) {
  return guard([&] { *out = wrap(A(a)); });
}

void mlxs_array_free(mlxs_array a) {
  delete a;
}

size_t mlxs_array_ndim(mlxs_array a) {
  return a->a.ndim();
}

const int32_t* mlxs_array_shape(mlxs_array a) {
  return a->a.shape().data();
}

const int64_t* mlxs_array_strides(mlxs_array a) {
  return reinterpret_cast<const int64_t*>(a->a.strides().data());
}

int mlxs_array_dtype(mlxs_array a) {
  return dtype_code(a->a.dtype());
}

size_t mlxs_array_size(mlxs_array a) {
  return a->a.size();
}

size_t mlxs_array_nbytes(mlxs_array a) {
  return a->a.nbytes();
}

int mlxs_array_to_host(mlxs_array a, void* dst, size_t dst_bytes) {
  return guard([&] {
    mx::array x = A(a);  // a handle (shared node), so that eval() may update it
    if (dst_bytes != x.nbytes()) {
      throw std::invalid_argument("[to_host] destination holds " + std::to_string(dst_bytes) +
                                  " bytes, the array " + std::to_string(x.nbytes()));
    }
    // A row-contiguous array is read in place once eval() returns (for an array an
    // async_eval already queued, eval() only waits for its event), as MLX's own
    // item() does. The copy below is a new node on the CPU stream: for a GPU array
    // its wait goes through the CPU stream's thread (~2 ms a read on CUDA, which
    // stalled each pipelined decode step). Views and broadcasts take the copy.
    x.eval();
    if (x.flags().row_contiguous && x.data_size() == x.size()) {
      if (x.nbytes() > 0) {
        std::memcpy(dst, x.data<char>(), x.nbytes());
      }
      return;
    }
    auto c = mx::contiguous(x, false, mx::Device::cpu);
    c.eval();
    if (c.nbytes() > 0) {
      std::memcpy(dst, c.data<char>(), c.nbytes());
    }
  });
}

int mlxs_array_to_string(mlxs_array a, char** out) {
  return guard([&] {
    std::ostringstream os;
    os << A(a);
    *out = dup_string(os.str());
  });
}

bool mlxs_array_same(mlxs_array a, mlxs_array b) {
  return a->a.id() == b->a.id();
}

int mlxs_vec_new(mlxs_vec* out) {
  return guard([&] { *out = new mlxs_vec_{}; });
}

void mlxs_vec_free(mlxs_vec v) {
  delete v;
}

size_t mlxs_vec_size(mlxs_vec v) {
  return v->v.size();
}

int mlxs_vec_get(mlxs_array* out, mlxs_vec v, size_t i) {
  return guard([&] {
    if (i >= v->v.size()) {
      throw std::out_of_range("[vec] index out of range");
    }
    *out = wrap(v->v[i]);
  });
}

int mlxs_vec_push(mlxs_vec v, mlxs_array a) {
  return guard([&] { v->v.push_back(A(a)); });
}

int mlxs_default_device(int32_t* device_type, int32_t* device_index) {
  return guard([&] {
    auto d = mx::default_device();
    *device_type = d.type == mx::Device::gpu ? MLXS_GPU : MLXS_CPU;
    *device_index = d.index;
  });
}

int mlxs_set_default_device(int32_t device_type, int32_t device_index) {
  return guard([&] { mx::set_default_device(device_from(device_type, device_index)); });
}

int mlxs_default_stream(int32_t device_type, int32_t device_index, int32_t* stream_index) {
  return guard([&] {
    *stream_index = mx::default_stream(device_from(device_type, device_index)).index;
  });
}

int mlxs_set_default_stream(int32_t device_type, int32_t device_index, int32_t stream_index) {
  return guard([&] {
    mx::set_default_stream(mx::Stream(stream_index, device_from(device_type, device_index)));
  });
}

int mlxs_new_stream(int32_t device_type, int32_t device_index, int32_t* stream_index) {
  return guard([&] {
    *stream_index = mx::new_stream(device_from(device_type, device_index)).index;
  });
}

int mlxs_synchronize(mlxs_sod s) {
  return guard([&] {
    switch (s.kind) {
      case MLXS_SOD_DEFAULT: mx::synchronize(); break;
      case MLXS_SOD_DEVICE:
        mx::synchronize(mx::default_stream(device_from(s.device_type, s.device_index)));
        break;
      default:
        mx::synchronize(mx::Stream(s.stream_index, device_from(s.device_type, s.device_index)));
    }
  });
}

int mlxs_gpu_is_available(bool* out) {
  return guard([&] { *out = mx::gpu::is_available(); });
}

int mlxs_metal_is_available(bool* out) {
  return guard([&] { *out = mx::metal::is_available(); });
}

int mlxs_cuda_is_available(bool* out) {
  return guard([&] { *out = mx::cu::is_available(); });
}

int mlxs_cuda_compute_capability(int32_t* major, int32_t* minor) {
  return guard([&] {
    *major = -1;
    *minor = -1;
    if (!mx::cu::is_available()) {
      return;
    }
    const auto& info = mx::device_info(mx::Device(mx::Device::gpu, 0));
    auto read = [&](const char* key, int32_t* out) {
      auto it = info.find(key);
      if (it != info.end() && std::holds_alternative<size_t>(it->second)) {
        *out = static_cast<int32_t>(std::get<size_t>(it->second));
      }
    };
    read("compute_capability_major", major);
    read("compute_capability_minor", minor);
  });
}

}  // extern "C"
