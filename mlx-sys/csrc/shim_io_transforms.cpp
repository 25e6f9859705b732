// Safetensors I/O, eval, compile and memory statistics.
#include "mlx/compile_impl.h"
#include "shim_common.hpp"

using namespace shim;

struct mlxs_map_ {
  // Ordered by name so that iteration is deterministic.
  std::vector<std::pair<std::string, mx::array>> arrays;
  std::vector<std::pair<std::string, std::string>> meta;
};

struct mlxs_closure_ {
  std::function<std::vector<mx::array>(const std::vector<mx::array>&)> fn;
  // The compile cache entry is keyed by this closure's address; erased on free.
  mx::detail::CompileCacheWeakPtr cache;
};

extern "C" {

int mlxs_map_new(mlxs_map* out) {
  return guard([&] { *out = new mlxs_map_{}; });
}

void mlxs_map_free(mlxs_map m) {
  delete m;
}

size_t mlxs_map_len(mlxs_map m) {
  return m->arrays.size();
}

int mlxs_map_get(mlxs_map m, size_t i, const char** name, mlxs_array* arr) {
  return guard([&] {
    if (i >= m->arrays.size()) {
      throw std::out_of_range("[map] index out of range");
    }
    *name = m->arrays[i].first.c_str();
    *arr = wrap(m->arrays[i].second);
  });
}

int mlxs_map_insert(mlxs_map m, const char* name, mlxs_array arr) {
  return guard([&] { m->arrays.emplace_back(name, A(arr)); });
}

size_t mlxs_map_meta_len(mlxs_map m) {
  return m->meta.size();
}

int mlxs_map_meta_get(mlxs_map m, size_t i, const char** key, const char** value) {
  return guard([&] {
    if (i >= m->meta.size()) {
      throw std::out_of_range("[map] metadata index out of range");
    }
    *key = m->meta[i].first.c_str();
    *value = m->meta[i].second.c_str();
  });
}

int mlxs_map_meta_insert(mlxs_map m, const char* key, const char* value) {
  return guard([&] { m->meta.emplace_back(key, value); });
}

int mlxs_load_safetensors(mlxs_map* out, const char* path, mlxs_sod s) {
  return guard([&] {
    auto loaded = mx::load_safetensors(std::string(path), sod(s));
    auto m = std::make_unique<mlxs_map_>();
    m->arrays.assign(loaded.first.begin(), loaded.first.end());
    m->meta.assign(loaded.second.begin(), loaded.second.end());
    std::sort(m->arrays.begin(), m->arrays.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    std::sort(m->meta.begin(), m->meta.end());
    *out = m.release();
  });
}

int mlxs_save_safetensors(const char* path, mlxs_map map) {
  return guard([&] {
    std::unordered_map<std::string, mx::array> arrays(map->arrays.begin(), map->arrays.end());
    std::unordered_map<std::string, std::string> meta(map->meta.begin(), map->meta.end());
    mx::save_safetensors(std::string(path), std::move(arrays), std::move(meta));
  });
}

int mlxs_eval(const mlxs_array* arrays_, size_t n) {
  return guard([&] { mx::eval(arrays(arrays_, n)); });
}

int mlxs_async_eval(const mlxs_array* arrays_, size_t n) {
  return guard([&] { mx::async_eval(arrays(arrays_, n)); });
}

int mlxs_compile(mlxs_closure* out, mlxs_closure_fn fn, void* ctx, void (*drop)(void*),
                 bool shapeless) {
  return guard([&] {
    std::shared_ptr<void> shared(ctx, [drop](void* p) {
      if (drop != nullptr) {
        drop(p);
      }
    });
    auto body = [fn, shared](const std::vector<mx::array>& inputs) {
      std::vector<mlxs_array_> handles;
      handles.reserve(inputs.size());
      std::vector<mlxs_array> ptrs;
      ptrs.reserve(inputs.size());
      for (auto& a : inputs) {
        handles.push_back(mlxs_array_{a});
      }
      for (auto& h : handles) {
        ptrs.push_back(&h);
      }
      mlxs_vec_ outs;
      char err[1024] = {0};
      if (fn(shared.get(), ptrs.data(), ptrs.size(), &outs, err, sizeof(err)) != 0) {
        throw std::runtime_error(std::string("[compile] ") + err);
      }
      return outs.v;
    };
    auto c = std::make_unique<mlxs_closure_>();
    auto id = reinterpret_cast<std::uintptr_t>(c.get());
    c->fn = mx::detail::compile(body, id, shapeless);
    c->cache = mx::detail::compile_cache();
    *out = c.release();
  });
}

int mlxs_closure_call(mlxs_vec out, mlxs_closure c, const mlxs_array* inputs, size_t n) {
  return guard([&] { out->v = c->fn(arrays(inputs, n)); });
}

void mlxs_closure_free(mlxs_closure c) {
  if (c == nullptr) {
    return;
  }
  try {
    mx::detail::compile_erase(c->cache, reinterpret_cast<std::uintptr_t>(c));
  } catch (...) {
    // Freeing must not throw; a cache that is already gone needs no erase.
  }
  delete c;
}

int mlxs_get_active_memory(size_t* out) {
  return guard([&] { *out = mx::get_active_memory(); });
}

int mlxs_get_peak_memory(size_t* out) {
  return guard([&] { *out = mx::get_peak_memory(); });
}

int mlxs_get_cache_memory(size_t* out) {
  return guard([&] { *out = mx::get_cache_memory(); });
}

int mlxs_reset_peak_memory(void) {
  return guard([&] { mx::reset_peak_memory(); });
}

int mlxs_clear_cache(void) {
  return guard([&] { mx::clear_cache(); });
}

int mlxs_set_memory_limit(size_t limit, size_t* previous) {
  return guard([&] { *previous = mx::set_memory_limit(limit); });
}

int mlxs_set_cache_limit(size_t limit, size_t* previous) {
  return guard([&] { *previous = mx::set_cache_limit(limit); });
}

}  // extern "C"
