// Element-wise ops, reductions, selection, shapes, constructors and random numbers.
#include "shim_common.hpp"

using namespace shim;

namespace {

mx::array unary(int op, const mx::array& a, mx::StreamOrDevice s) {
  switch (op) {
    case MLXS_ABS: return mx::abs(a, s);
    case MLXS_NEGATIVE: return mx::negative(a, s);
    case MLXS_EXP: return mx::exp(a, s);
    case MLXS_LOG: return mx::log(a, s);
    case MLXS_LOG1P: return mx::log1p(a, s);
    case MLXS_SQRT: return mx::sqrt(a, s);
    case MLXS_RSQRT: return mx::rsqrt(a, s);
    case MLXS_SQUARE: return mx::square(a, s);
    case MLXS_SIGMOID: return mx::sigmoid(a, s);
    case MLXS_TANH: return mx::tanh(a, s);
    case MLXS_SIN: return mx::sin(a, s);
    case MLXS_COS: return mx::cos(a, s);
    case MLXS_FLOOR: return mx::floor(a, s);
    case MLXS_CEIL: return mx::ceil(a, s);
    case MLXS_ERF: return mx::erf(a, s);
    case MLXS_RECIPROCAL: return mx::reciprocal(a, s);
    case MLXS_LOGICAL_NOT: return mx::logical_not(a, s);
    case MLXS_STOP_GRADIENT: return mx::stop_gradient(a, s);
    case MLXS_CONTIGUOUS: return mx::contiguous(a, false, s);
    case MLXS_COPY: return mx::copy(a, s);
    case MLXS_SIGN: return mx::sign(a, s);
    case MLXS_ISNAN: return mx::isnan(a, s);
  }
  throw std::invalid_argument("[mlx-sys] unknown unary op code " + std::to_string(op));
}

mx::array binary(int op, const mx::array& a, const mx::array& b, mx::StreamOrDevice s) {
  switch (op) {
    case MLXS_ADD: return mx::add(a, b, s);
    case MLXS_SUBTRACT: return mx::subtract(a, b, s);
    case MLXS_MULTIPLY: return mx::multiply(a, b, s);
    case MLXS_DIVIDE: return mx::divide(a, b, s);
    case MLXS_MAXIMUM: return mx::maximum(a, b, s);
    case MLXS_MINIMUM: return mx::minimum(a, b, s);
    case MLXS_POWER: return mx::power(a, b, s);
    case MLXS_REMAINDER: return mx::remainder(a, b, s);
    case MLXS_FLOOR_DIVIDE: return mx::floor_divide(a, b, s);
    case MLXS_EQUAL: return mx::equal(a, b, s);
    case MLXS_NOT_EQUAL: return mx::not_equal(a, b, s);
    case MLXS_LESS: return mx::less(a, b, s);
    case MLXS_LESS_EQUAL: return mx::less_equal(a, b, s);
    case MLXS_GREATER: return mx::greater(a, b, s);
    case MLXS_GREATER_EQUAL: return mx::greater_equal(a, b, s);
    case MLXS_LOGICAL_AND: return mx::logical_and(a, b, s);
    case MLXS_LOGICAL_OR: return mx::logical_or(a, b, s);
    case MLXS_MATMUL: return mx::matmul(a, b, s);
  }
  throw std::invalid_argument("[mlx-sys] unknown binary op code " + std::to_string(op));
}

mx::array reduce(int op, const mx::array& a, const std::vector<int>& axes, bool keepdims,
                 mx::StreamOrDevice s) {
  switch (op) {
    case MLXS_SUM: return mx::sum(a, axes, keepdims, s);
    case MLXS_MEAN: return mx::mean(a, axes, keepdims, s);
    case MLXS_MAX: return mx::max(a, axes, keepdims, s);
    case MLXS_MIN: return mx::min(a, axes, keepdims, s);
    case MLXS_PROD: return mx::prod(a, axes, keepdims, s);
    case MLXS_LOGSUMEXP: return mx::logsumexp(a, axes, keepdims, s);
    case MLXS_ALL: return mx::all(a, axes, keepdims, s);
    case MLXS_ANY: return mx::any(a, axes, keepdims, s);
  }
  throw std::invalid_argument("[mlx-sys] unknown reduce op code " + std::to_string(op));
}

}  // namespace

extern "C" {

int mlxs_unary(mlxs_array* out, int op, mlxs_array a, mlxs_sod s) {
  return guard([&] { *out = wrap(unary(op, A(a), sod(s))); });
}

int mlxs_binary(mlxs_array* out, int op, mlxs_array a, mlxs_array b, mlxs_sod s) {
  return guard([&] { *out = wrap(binary(op, A(a), A(b), sod(s))); });
}

int mlxs_reduce(mlxs_array* out, int op, mlxs_array a, const int32_t* axes, int64_t naxes,
                bool keepdims, mlxs_sod s) {
  return guard([&] {
    std::vector<int> ax;
    if (naxes < 0) {
      for (int i = 0; i < static_cast<int>(A(a).ndim()); i++) {
        ax.push_back(i);
      }
    } else {
      ax = ints(axes, static_cast<size_t>(naxes));
    }
    *out = wrap(reduce(op, A(a), ax, keepdims, sod(s)));
  });
}

int mlxs_argmax(mlxs_array* out, mlxs_array a, int32_t axis, bool keepdims, mlxs_sod s) {
  return guard([&] { *out = wrap(mx::argmax(A(a), axis, keepdims, sod(s))); });
}

int mlxs_argmin(mlxs_array* out, mlxs_array a, int32_t axis, bool keepdims, mlxs_sod s) {
  return guard([&] { *out = wrap(mx::argmin(A(a), axis, keepdims, sod(s))); });
}

int mlxs_softmax(mlxs_array* out, mlxs_array a, const int32_t* axes, size_t naxes, bool precise,
                 mlxs_sod s) {
  return guard([&] { *out = wrap(mx::softmax(A(a), ints(axes, naxes), precise, sod(s))); });
}

int mlxs_cumsum(mlxs_array* out, mlxs_array a, int32_t axis, bool reverse, bool inclusive,
                mlxs_sod s) {
  return guard([&] {
    *out = wrap(mx::cumsum(A(a), axis, reverse, inclusive, std::nullopt, sod(s)));
  });
}

int mlxs_argpartition(mlxs_array* out, mlxs_array a, int32_t kth, int32_t axis, mlxs_sod s) {
  return guard([&] { *out = wrap(mx::argpartition(A(a), kth, axis, sod(s))); });
}

int mlxs_argsort(mlxs_array* out, mlxs_array a, int32_t axis, mlxs_sod s) {
  return guard([&] { *out = wrap(mx::argsort(A(a), axis, sod(s))); });
}

int mlxs_sort(mlxs_array* out, mlxs_array a, int32_t axis, mlxs_sod s) {
  return guard([&] { *out = wrap(mx::sort(A(a), axis, sod(s))); });
}

int mlxs_topk(mlxs_array* out, mlxs_array a, int32_t k, int32_t axis, mlxs_sod s) {
  return guard([&] { *out = wrap(mx::topk(A(a), k, axis, sod(s))); });
}

int mlxs_take(mlxs_array* out, mlxs_array a, mlxs_array indices, bool has_axis, int32_t axis,
              mlxs_sod s) {
  return guard([&] {
    *out = wrap(has_axis ? mx::take(A(a), A(indices), axis, sod(s))
                         : mx::take(A(a), A(indices), sod(s)));
  });
}

int mlxs_take_along_axis(mlxs_array* out, mlxs_array a, mlxs_array indices, int32_t axis,
                         mlxs_sod s) {
  return guard([&] { *out = wrap(mx::take_along_axis(A(a), A(indices), axis, sod(s))); });
}

int mlxs_put_along_axis(mlxs_array* out, mlxs_array a, mlxs_array indices, mlxs_array values,
                        int32_t axis, mlxs_sod s) {
  return guard([&] {
    *out = wrap(mx::put_along_axis(A(a), A(indices), A(values), axis, sod(s)));
  });
}

int mlxs_where(mlxs_array* out, mlxs_array cond, mlxs_array x, mlxs_array y, mlxs_sod s) {
  return guard([&] { *out = wrap(mx::where(A(cond), A(x), A(y), sod(s))); });
}

int mlxs_reshape(mlxs_array* out, mlxs_array a, const int32_t* shape, size_t ndim, mlxs_sod s) {
  return guard([&] { *out = wrap(mx::reshape(A(a), shape_from(shape, ndim), sod(s))); });
}

int mlxs_transpose(mlxs_array* out, mlxs_array a, const int32_t* axes, size_t naxes,
                   mlxs_sod s) {
  return guard([&] {
    *out = wrap(naxes == 0 ? mx::transpose(A(a), sod(s))
                           : mx::transpose(A(a), ints(axes, naxes), sod(s)));
  });
}

int mlxs_swapaxes(mlxs_array* out, mlxs_array a, int32_t axis1, int32_t axis2, mlxs_sod s) {
  return guard([&] { *out = wrap(mx::swapaxes(A(a), axis1, axis2, sod(s))); });
}

int mlxs_expand_dims(mlxs_array* out, mlxs_array a, const int32_t* axes, size_t naxes,
                     mlxs_sod s) {
  return guard([&] { *out = wrap(mx::expand_dims(A(a), ints(axes, naxes), sod(s))); });
}

int mlxs_squeeze(mlxs_array* out, mlxs_array a, const int32_t* axes, size_t naxes, mlxs_sod s) {
  return guard([&] {
    *out = wrap(naxes == 0 ? mx::squeeze(A(a), sod(s))
                           : mx::squeeze(A(a), ints(axes, naxes), sod(s)));
  });
}

int mlxs_flatten(mlxs_array* out, mlxs_array a, int32_t start_axis, int32_t end_axis,
                 mlxs_sod s) {
  return guard([&] { *out = wrap(mx::flatten(A(a), start_axis, end_axis, sod(s))); });
}

int mlxs_broadcast_to(mlxs_array* out, mlxs_array a, const int32_t* shape, size_t ndim,
                      mlxs_sod s) {
  return guard([&] { *out = wrap(mx::broadcast_to(A(a), shape_from(shape, ndim), sod(s))); });
}

int mlxs_slice(mlxs_array* out, mlxs_array a, const int32_t* start, const int32_t* stop,
               const int32_t* strides, size_t ndim, mlxs_sod s) {
  return guard([&] {
    *out = wrap(mx::slice(A(a), shape_from(start, ndim), shape_from(stop, ndim),
                          shape_from(strides, ndim), sod(s)));
  });
}

int mlxs_slice_update(mlxs_array* out, mlxs_array src, mlxs_array update, const int32_t* start,
                      const int32_t* stop, const int32_t* strides, size_t ndim, mlxs_sod s) {
  return guard([&] {
    *out = wrap(mx::slice_update(A(src), A(update), shape_from(start, ndim),
                                 shape_from(stop, ndim), shape_from(strides, ndim), sod(s)));
  });
}

int mlxs_concatenate(mlxs_array* out, const mlxs_array* arrays_, size_t n, int32_t axis,
                     mlxs_sod s) {
  return guard([&] { *out = wrap(mx::concatenate(arrays(arrays_, n), axis, sod(s))); });
}

int mlxs_stack(mlxs_array* out, const mlxs_array* arrays_, size_t n, int32_t axis, mlxs_sod s) {
  return guard([&] { *out = wrap(mx::stack(arrays(arrays_, n), axis, sod(s))); });
}

int mlxs_split(mlxs_vec out, mlxs_array a, int32_t num, const int32_t* indices, size_t nindices,
               int32_t axis, mlxs_sod s) {
  return guard([&] {
    out->v = nindices == 0 ? mx::split(A(a), num, axis, sod(s))
                           : mx::split(A(a), shape_from(indices, nindices), axis, sod(s));
  });
}

int mlxs_astype(mlxs_array* out, mlxs_array a, int dtype, mlxs_sod s) {
  return guard([&] { *out = wrap(mx::astype(A(a), dtype_from(dtype), sod(s))); });
}

int mlxs_view(mlxs_array* out, mlxs_array a, int dtype, mlxs_sod s) {
  return guard([&] { *out = wrap(mx::view(A(a), dtype_from(dtype), sod(s))); });
}

int mlxs_arange(mlxs_array* out, double start, double stop, double step, int dtype,
                mlxs_sod s) {
  return guard([&] { *out = wrap(mx::arange(start, stop, step, dtype_from(dtype), sod(s))); });
}

int mlxs_zeros(mlxs_array* out, const int32_t* shape, size_t ndim, int dtype, mlxs_sod s) {
  return guard([&] { *out = wrap(mx::zeros(shape_from(shape, ndim), dtype_from(dtype), sod(s))); });
}

int mlxs_ones(mlxs_array* out, const int32_t* shape, size_t ndim, int dtype, mlxs_sod s) {
  return guard([&] { *out = wrap(mx::ones(shape_from(shape, ndim), dtype_from(dtype), sod(s))); });
}

int mlxs_full(mlxs_array* out, const int32_t* shape, size_t ndim, mlxs_array value, int dtype,
              mlxs_sod s) {
  return guard([&] {
    *out = wrap(mx::full(shape_from(shape, ndim), A(value), dtype_from(dtype), sod(s)));
  });
}

int mlxs_random_seed(uint64_t seed) {
  return guard([&] { mx::random::seed(seed); });
}

int mlxs_random_key(mlxs_array* out, uint64_t seed) {
  return guard([&] { *out = wrap(mx::random::key(seed)); });
}

int mlxs_random_split(mlxs_array* out, mlxs_array key, int32_t num, mlxs_sod s) {
  return guard([&] { *out = wrap(mx::random::split(A(key), num, sod(s))); });
}

int mlxs_random_normal(mlxs_array* out, const int32_t* shape, size_t ndim, int dtype, float loc,
                       float scale, mlxs_array key, mlxs_sod s) {
  return guard([&] {
    *out = wrap(mx::random::normal(shape_from(shape, ndim), dtype_from(dtype), loc, scale,
                                   opt(key), sod(s)));
  });
}

int mlxs_random_uniform(mlxs_array* out, mlxs_array low, mlxs_array high, const int32_t* shape,
                        size_t ndim, int dtype, mlxs_array key, mlxs_sod s) {
  return guard([&] {
    *out = wrap(mx::random::uniform(A(low), A(high), shape_from(shape, ndim),
                                    dtype_from(dtype), opt(key), sod(s)));
  });
}

int mlxs_random_randint(mlxs_array* out, mlxs_array low, mlxs_array high, const int32_t* shape,
                        size_t ndim, int dtype, mlxs_array key, mlxs_sod s) {
  return guard([&] {
    *out = wrap(mx::random::randint(A(low), A(high), shape_from(shape, ndim),
                                    dtype_from(dtype), opt(key), sod(s)));
  });
}

int mlxs_random_categorical(mlxs_array* out, mlxs_array logits, int32_t axis, mlxs_array key,
                            mlxs_sod s) {
  return guard([&] {
    *out = wrap(mx::random::categorical(A(logits), axis, opt(key), sod(s)));
  });
}

}  // extern "C"
