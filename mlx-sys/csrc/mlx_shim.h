/* The C ABI of mlx-sys over MLX's C++ API.
 *
 * Conventions (those of mlx-c): handles are opaque pointers that the caller frees
 * explicitly; every call that can fail returns an int status (0 = success) and writes
 * its results through out-pointers; no C++ exception ever crosses this boundary:
 * its message is kept per thread and read with mlxs_last_error().
 */
#ifndef MLX_SHIM_H
#define MLX_SHIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* An MLX array (a shared reference to a node of the lazy graph). */
typedef struct mlxs_array_ *mlxs_array;
/* A growable list of arrays, used for ops with several outputs. */
typedef struct mlxs_vec_ *mlxs_vec;
/* A list of (name, array) pairs plus (key, value) string metadata. */
typedef struct mlxs_map_ *mlxs_map;
/* A compiled function. */
typedef struct mlxs_closure_ *mlxs_closure;
/* A custom GPU kernel (Metal or CUDA) built once and called many times. */
typedef struct mlxs_kernel_ *mlxs_kernel;

/* Dtype codes: the order of mlx::core::Dtype::Val. */
enum mlxs_dtype {
  MLXS_BOOL = 0,
  MLXS_UINT8,
  MLXS_UINT16,
  MLXS_UINT32,
  MLXS_UINT64,
  MLXS_INT8,
  MLXS_INT16,
  MLXS_INT32,
  MLXS_INT64,
  MLXS_FLOAT16,
  MLXS_FLOAT32,
  MLXS_FLOAT64,
  MLXS_BFLOAT16,
  MLXS_COMPLEX64,
};

enum mlxs_device_type { MLXS_CPU = 0, MLXS_GPU = 1 };

/* Where an op runs: the default stream, a device's default stream, or a stream. */
enum mlxs_sod_kind { MLXS_SOD_DEFAULT = 0, MLXS_SOD_DEVICE = 1, MLXS_SOD_STREAM = 2 };
typedef struct mlxs_sod {
  int32_t kind;        /* enum mlxs_sod_kind */
  int32_t device_type; /* enum mlxs_device_type */
  int32_t device_index;
  int32_t stream_index; /* only for MLXS_SOD_STREAM */
} mlxs_sod;

/* The message of the last failed call on this thread ("" if none). */
const char *mlxs_last_error(void);
/* MLX's version string. */
const char *mlxs_version(void);
/* Frees a string returned by this library. */
void mlxs_string_free(char *s);

/* ---- arrays ---- */
int mlxs_array_from_data(mlxs_array *out, const void *data, const int32_t *shape, size_t ndim,
                         int dtype);
int mlxs_array_from_f64(mlxs_array *out, double v, int dtype);
int mlxs_array_clone(mlxs_array *out, mlxs_array a);
void mlxs_array_free(mlxs_array a);
size_t mlxs_array_ndim(mlxs_array a);
const int32_t *mlxs_array_shape(mlxs_array a);
const int64_t *mlxs_array_strides(mlxs_array a);
int mlxs_array_dtype(mlxs_array a);
size_t mlxs_array_size(mlxs_array a);
size_t mlxs_array_nbytes(mlxs_array a);
/* Evaluates a, makes it row-contiguous and copies its nbytes() into dst. */
int mlxs_array_to_host(mlxs_array a, void *dst, size_t dst_bytes);
/* MLX's printed form of the array (evaluates it). Free with mlxs_string_free. */
int mlxs_array_to_string(mlxs_array a, char **out);
/* True if both handles refer to the same graph node. */
bool mlxs_array_same(mlxs_array a, mlxs_array b);

int mlxs_vec_new(mlxs_vec *out);
void mlxs_vec_free(mlxs_vec v);
size_t mlxs_vec_size(mlxs_vec v);
/* A new handle to element i (free it). */
int mlxs_vec_get(mlxs_array *out, mlxs_vec v, size_t i);

/* ---- devices and streams ---- */
int mlxs_default_device(int32_t *device_type, int32_t *device_index);
int mlxs_set_default_device(int32_t device_type, int32_t device_index);
int mlxs_default_stream(int32_t device_type, int32_t device_index, int32_t *stream_index);
int mlxs_set_default_stream(int32_t device_type, int32_t device_index, int32_t stream_index);
int mlxs_new_stream(int32_t device_type, int32_t device_index, int32_t *stream_index);
int mlxs_synchronize(mlxs_sod s);
int mlxs_gpu_is_available(bool *out);
int mlxs_metal_is_available(bool *out);
int mlxs_cuda_is_available(bool *out);
/* The CUDA device's compute capability (MLX's device_info); -1 and -1 when MLX
   does not run on CUDA or does not report it. */
int mlxs_cuda_compute_capability(int32_t *major, int32_t *minor);

/* ---- element-wise ops (op codes in mlxs_unary_op / mlxs_binary_op) ---- */
enum mlxs_unary_op {
  MLXS_ABS = 0,
  MLXS_NEGATIVE,
  MLXS_EXP,
  MLXS_LOG,
  MLXS_LOG1P,
  MLXS_SQRT,
  MLXS_RSQRT,
  MLXS_SQUARE,
  MLXS_SIGMOID,
  MLXS_TANH,
  MLXS_SIN,
  MLXS_COS,
  MLXS_FLOOR,
  MLXS_CEIL,
  MLXS_ERF,
  MLXS_RECIPROCAL,
  MLXS_LOGICAL_NOT,
  MLXS_STOP_GRADIENT,
  MLXS_CONTIGUOUS,
  MLXS_COPY,
  MLXS_SIGN,
  MLXS_ISNAN,
};
int mlxs_unary(mlxs_array *out, int op, mlxs_array a, mlxs_sod s);

enum mlxs_binary_op {
  MLXS_ADD = 0,
  MLXS_SUBTRACT,
  MLXS_MULTIPLY,
  MLXS_DIVIDE,
  MLXS_MAXIMUM,
  MLXS_MINIMUM,
  MLXS_POWER,
  MLXS_REMAINDER,
  MLXS_FLOOR_DIVIDE,
  MLXS_EQUAL,
  MLXS_NOT_EQUAL,
  MLXS_LESS,
  MLXS_LESS_EQUAL,
  MLXS_GREATER,
  MLXS_GREATER_EQUAL,
  MLXS_LOGICAL_AND,
  MLXS_LOGICAL_OR,
  MLXS_MATMUL,
};
int mlxs_binary(mlxs_array *out, int op, mlxs_array a, mlxs_array b, mlxs_sod s);

/* ---- reductions; naxes < 0 reduces over all axes ---- */
enum mlxs_reduce_op {
  MLXS_SUM = 0,
  MLXS_MEAN,
  MLXS_MAX,
  MLXS_MIN,
  MLXS_PROD,
  MLXS_LOGSUMEXP,
  MLXS_ALL,
  MLXS_ANY,
};
int mlxs_reduce(mlxs_array *out, int op, mlxs_array a, const int32_t *axes, int64_t naxes,
                bool keepdims, mlxs_sod s);
int mlxs_argmax(mlxs_array *out, mlxs_array a, int32_t axis, bool keepdims, mlxs_sod s);
int mlxs_argmin(mlxs_array *out, mlxs_array a, int32_t axis, bool keepdims, mlxs_sod s);
int mlxs_softmax(mlxs_array *out, mlxs_array a, const int32_t *axes, size_t naxes, bool precise,
                 mlxs_sod s);
int mlxs_cumsum(mlxs_array *out, mlxs_array a, int32_t axis, bool reverse, bool inclusive,
                mlxs_sod s);

/* ---- sorting and selection ---- */
int mlxs_argpartition(mlxs_array *out, mlxs_array a, int32_t kth, int32_t axis, mlxs_sod s);
int mlxs_argsort(mlxs_array *out, mlxs_array a, int32_t axis, mlxs_sod s);
int mlxs_sort(mlxs_array *out, mlxs_array a, int32_t axis, mlxs_sod s);
int mlxs_topk(mlxs_array *out, mlxs_array a, int32_t k, int32_t axis, mlxs_sod s);
/* has_axis = false takes from the flattened array. */
int mlxs_take(mlxs_array *out, mlxs_array a, mlxs_array indices, bool has_axis, int32_t axis,
              mlxs_sod s);
int mlxs_take_along_axis(mlxs_array *out, mlxs_array a, mlxs_array indices, int32_t axis,
                         mlxs_sod s);
int mlxs_put_along_axis(mlxs_array *out, mlxs_array a, mlxs_array indices, mlxs_array values,
                        int32_t axis, mlxs_sod s);
int mlxs_where(mlxs_array *out, mlxs_array cond, mlxs_array x, mlxs_array y, mlxs_sod s);

/* ---- shapes ---- */
int mlxs_reshape(mlxs_array *out, mlxs_array a, const int32_t *shape, size_t ndim, mlxs_sod s);
/* naxes = 0 reverses the axes. */
int mlxs_transpose(mlxs_array *out, mlxs_array a, const int32_t *axes, size_t naxes,
                   mlxs_sod s);
int mlxs_swapaxes(mlxs_array *out, mlxs_array a, int32_t axis1, int32_t axis2, mlxs_sod s);
int mlxs_expand_dims(mlxs_array *out, mlxs_array a, const int32_t *axes, size_t naxes,
                     mlxs_sod s);
/* naxes = 0 squeezes every axis of size 1. */
int mlxs_squeeze(mlxs_array *out, mlxs_array a, const int32_t *axes, size_t naxes, mlxs_sod s);
int mlxs_flatten(mlxs_array *out, mlxs_array a, int32_t start_axis, int32_t end_axis,
                 mlxs_sod s);
int mlxs_broadcast_to(mlxs_array *out, mlxs_array a, const int32_t *shape, size_t ndim,
                      mlxs_sod s);
int mlxs_slice(mlxs_array *out, mlxs_array a, const int32_t *start, const int32_t *stop,
               const int32_t *strides, size_t ndim, mlxs_sod s);
int mlxs_slice_update(mlxs_array *out, mlxs_array src, mlxs_array update, const int32_t *start,
                      const int32_t *stop, const int32_t *strides, size_t ndim, mlxs_sod s);
int mlxs_concatenate(mlxs_array *out, const mlxs_array *arrays, size_t n, int32_t axis,
                     mlxs_sod s);
int mlxs_stack(mlxs_array *out, const mlxs_array *arrays, size_t n, int32_t axis, mlxs_sod s);
/* Splits into `num` equal parts (nindices = 0) or at the given indices. */
int mlxs_split(mlxs_vec out, mlxs_array a, int32_t num, const int32_t *indices, size_t nindices,
               int32_t axis, mlxs_sod s);
int mlxs_astype(mlxs_array *out, mlxs_array a, int dtype, mlxs_sod s);
int mlxs_view(mlxs_array *out, mlxs_array a, int dtype, mlxs_sod s);

/* ---- constructors ---- */
int mlxs_arange(mlxs_array *out, double start, double stop, double step, int dtype, mlxs_sod s);
int mlxs_zeros(mlxs_array *out, const int32_t *shape, size_t ndim, int dtype, mlxs_sod s);
int mlxs_ones(mlxs_array *out, const int32_t *shape, size_t ndim, int dtype, mlxs_sod s);
int mlxs_full(mlxs_array *out, const int32_t *shape, size_t ndim, mlxs_array value, int dtype,
              mlxs_sod s);

/* ---- random; key may be NULL (the global generator) ---- */
int mlxs_random_seed(uint64_t seed);
int mlxs_random_key(mlxs_array *out, uint64_t seed);
int mlxs_random_split(mlxs_array *out, mlxs_array key, int32_t num, mlxs_sod s);
int mlxs_random_normal(mlxs_array *out, const int32_t *shape, size_t ndim, int dtype, float loc,
                       float scale, mlxs_array key, mlxs_sod s);
int mlxs_random_uniform(mlxs_array *out, mlxs_array low, mlxs_array high, const int32_t *shape,
                        size_t ndim, int dtype, mlxs_array key, mlxs_sod s);
int mlxs_random_randint(mlxs_array *out, mlxs_array low, mlxs_array high, const int32_t *shape,
                        size_t ndim, int dtype, mlxs_array key, mlxs_sod s);
int mlxs_random_categorical(mlxs_array *out, mlxs_array logits, int32_t axis, mlxs_array key,
                            mlxs_sod s);

/* ---- fast ops; weight/bias/mask may be NULL ---- */
int mlxs_fast_rms_norm(mlxs_array *out, mlxs_array x, mlxs_array weight, float eps, mlxs_sod s);
int mlxs_fast_layer_norm(mlxs_array *out, mlxs_array x, mlxs_array weight, mlxs_array bias,
                         float eps, mlxs_sod s);
/* has_base = false passes no base (then freqs must be given). */
int mlxs_fast_rope(mlxs_array *out, mlxs_array x, int32_t dims, bool traditional, bool has_base,
                   float base, float scale, int32_t offset, mlxs_array freqs, mlxs_sod s);
/* mask_mode: "" or "causal"; mask may be NULL. */
int mlxs_fast_sdpa(mlxs_array *out, mlxs_array q, mlxs_array k, mlxs_array v, float scale,
                   const char *mask_mode, mlxs_array mask, mlxs_sod s);

/* ---- quantization; biases may be NULL (modes without biases); mode: "affine",
 * "mxfp4", "mxfp8", "nvfp4" ---- */
int mlxs_quantize(mlxs_vec out, mlxs_array w, int32_t group_size, int32_t bits, const char *mode,
                  mlxs_sod s);
/* dtype < 0: MLX's default output dtype. */
int mlxs_dequantize(mlxs_array *out, mlxs_array w, mlxs_array scales, mlxs_array biases,
                    int32_t group_size, int32_t bits, const char *mode, int dtype, mlxs_sod s);
int mlxs_quantized_matmul(mlxs_array *out, mlxs_array x, mlxs_array w, mlxs_array scales,
                          mlxs_array biases, bool transpose, int32_t group_size, int32_t bits,
                          const char *mode, mlxs_sod s);
/* lhs_indices / rhs_indices may be NULL. */
int mlxs_gather_qmm(mlxs_array *out, mlxs_array x, mlxs_array w, mlxs_array scales,
                    mlxs_array biases, mlxs_array lhs_indices, mlxs_array rhs_indices,
                    bool transpose, int32_t group_size, int32_t bits, const char *mode,
                    bool sorted_indices, mlxs_sod s);
int mlxs_gather_mm(mlxs_array *out, mlxs_array a, mlxs_array b, mlxs_array lhs_indices,
                   mlxs_array rhs_indices, bool sorted_indices, mlxs_sod s);

/* ---- safetensors ---- */
int mlxs_load_safetensors(mlxs_map *out, const char *path, mlxs_sod s);
int mlxs_save_safetensors(const char *path, mlxs_map map);
int mlxs_map_new(mlxs_map *out);
void mlxs_map_free(mlxs_map m);
size_t mlxs_map_len(mlxs_map m);
/* Name of entry i (owned by the map) and a new handle to its array. */
int mlxs_map_get(mlxs_map m, size_t i, const char **name, mlxs_array *arr);
int mlxs_map_insert(mlxs_map m, const char *name, mlxs_array arr);
size_t mlxs_map_meta_len(mlxs_map m);
int mlxs_map_meta_get(mlxs_map m, size_t i, const char **key, const char **value);
int mlxs_map_meta_insert(mlxs_map m, const char *key, const char *value);

/* ---- transforms ---- */
int mlxs_eval(const mlxs_array *arrays, size_t n);
int mlxs_async_eval(const mlxs_array *arrays, size_t n);

/* A function for mlxs_compile: reads n inputs, pushes its outputs into out (with
 * mlxs_vec_push), returns 0 on success; on failure it writes a message into err. */
typedef int (*mlxs_closure_fn)(void *ctx, const mlxs_array *inputs, size_t n, mlxs_vec out,
                               char *err, size_t err_len);
int mlxs_vec_push(mlxs_vec v, mlxs_array a);
/* ctx is released with drop(ctx) when the closure is freed. */
int mlxs_compile(mlxs_closure *out, mlxs_closure_fn fn, void *ctx, void (*drop)(void *),
                 bool shapeless);
int mlxs_closure_call(mlxs_vec out, mlxs_closure c, const mlxs_array *inputs, size_t n);
void mlxs_closure_free(mlxs_closure c);

/* ---- memory ---- */
int mlxs_get_active_memory(size_t *out);
int mlxs_get_peak_memory(size_t *out);
int mlxs_get_cache_memory(size_t *out);
int mlxs_reset_peak_memory(void);
int mlxs_clear_cache(void);
int mlxs_set_memory_limit(size_t limit, size_t *previous);
int mlxs_set_cache_limit(size_t limit, size_t *previous);

/* ---- custom GPU kernels ---- */
enum mlxs_kernel_backend { MLXS_KERNEL_METAL = 0, MLXS_KERNEL_CUDA = 1 };
/* Builds a kernel from its body; MLX writes the signature. shared_memory is CUDA's
 * dynamic shared memory in bytes, atomic_outputs is Metal's flag. */
int mlxs_kernel_new(mlxs_kernel *out, int backend, const char *name, const char *const *input_names,
                    size_t n_inputs, const char *const *output_names, size_t n_outputs,
                    const char *source, const char *header, bool ensure_row_contiguous,
                    bool atomic_outputs, int32_t shared_memory);
void mlxs_kernel_free(mlxs_kernel k);
/* Template argument kinds. */
enum mlxs_template_kind { MLXS_TEMPLATE_INT = 0, MLXS_TEMPLATE_BOOL = 1, MLXS_TEMPLATE_DTYPE = 2 };
typedef struct mlxs_template_arg {
  const char *name;
  int32_t kind;
  int32_t value; /* the int, 0/1, or the dtype code */
} mlxs_template_arg;
/* Output i has shape out_shapes[out_offsets[i] .. out_offsets[i] + out_ndims[i]]. */
int mlxs_kernel_call(mlxs_vec out, mlxs_kernel k, const mlxs_array *inputs, size_t n_inputs,
                     const int32_t *out_shapes, const size_t *out_ndims, const int *out_dtypes,
                     size_t n_outputs, const int32_t grid[3], const int32_t threadgroup[3],
                     const mlxs_template_arg *template_args, size_t n_template_args,
                     bool has_init_value, float init_value, bool verbose, mlxs_sod s);

/* ---- custom CPU primitives implemented by the caller ---- */
/* A row-contiguous view of one input or output buffer during evaluation. */
typedef struct mlxs_buffer {
  void *data;
  const int32_t *shape;
  size_t ndim;
  size_t size; /* elements */
  int32_t dtype;
} mlxs_buffer;
/* The kernel: fills the outputs from the inputs; returns 0 on success, otherwise writes
 * a message into err (at most err_len bytes, NUL-terminated) and returns nonzero. */
typedef int (*mlxs_cpu_kernel_fn)(void *ctx, const mlxs_buffer *inputs, size_t n_inputs,
                                  mlxs_buffer *outputs, size_t n_outputs, char *err,
                                  size_t err_len);
/* Builds outputs of a new primitive named `name`. Two primitives are equivalent (the
 * graph may merge them) when their names and their `params` bytes are equal. ctx is
 * shared by the primitive and released with drop(ctx) when the last user is gone.
 * Inputs are made row-contiguous in the graph before the primitive sees them. */
int mlxs_cpu_primitive(mlxs_vec out, const char *name, const uint8_t *params, size_t params_len,
                       mlxs_cpu_kernel_fn fn, void *ctx, void (*drop)(void *),
                       const mlxs_array *inputs, size_t n_inputs, const int32_t *out_shapes,
                       const size_t *out_ndims, const int *out_dtypes, size_t n_outputs,
                       mlxs_sod s);

#ifdef __cplusplus
}
#endif

#endif
