// Fused Adam step for the map's per-Gaussian parameters: every field of a step in one pass over its rows, the
// per-row step counts and bias corrections included, instead of a dozen element-wise tensor ops per field. Each
// row (Gaussian) has its own step count, so its bias corrections (1 - beta^step) start at its first step
// (Gaussians join the map at any time). Same arithmetic as TrainableMap's PyTorch path (adam_step_torch).
// Plain C ABI, called through ctypes with raw pointers to contiguous tensors; built into the same
// library as the rasterizer (see clipgs/render/cpu_kernel.py).
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace {

// One row of one field: Adam with this row's bias corrections c1, c2 (in T, as the PyTorch path casts them).
template <typename T>
inline void adam_row(int64_t width, T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v,
                     T c1, T c2, T lr, T b1, T b2, T eps) {
  for (int64_t k = 0; k < width; ++k) {
    const T gk = g[k];
    const T mk = m[k] * b1 + gk * (T(1) - b1);
    const T vk = v[k] * b2 + gk * gk * (T(1) - b2);
    m[k] = mk;
    v[k] = vk;
    p[k] -= lr * (mk / c1) / (std::sqrt(vk / c2) + eps);
  }
}

// The width known at compile time for the map's fields (1, 3, 4, and 16 semantic channels): the loop unrolls.
template <typename T>
inline void adam_row_any(int64_t width, T* p, const T* g, T* m, T* v, T c1, T c2, T lr, T b1, T b2, T eps) {
  switch (width) {
    case 1: return adam_row<T>(1, p, g, m, v, c1, c2, lr, b1, b2, eps);
    case 3: return adam_row<T>(3, p, g, m, v, c1, c2, lr, b1, b2, eps);
    case 4: return adam_row<T>(4, p, g, m, v, c1, c2, lr, b1, b2, eps);
    case 16: return adam_row<T>(16, p, g, m, v, c1, c2, lr, b1, b2, eps);
    default: return adam_row<T>(width, p, g, m, v, c1, c2, lr, b1, b2, eps);
  }
}

// One Adam step of n_fields per-Gaussian fields. n: rows of the gradients (the step's working set, or the whole
// map); map_rows: (n,) each gradient row's row in the map, or null (the same row); mask: (n,) the rows that step
// (those the render composited), or null (all). steps: (N,) float64 per-row counts, incremented where a row
// steps; its bias corrections are 1 - beta^count in float64 (exp(count * log(beta)): within an ulp or two of
// std::pow), cast to T. Per field f: param[f], exp_avg[f], exp_avg_sq[f] (N, widths[f]) updated in place at the
// map rows, grad[f] (n, widths[f]). Rows are distinct, so threads never write the same row.
template <typename T>
void adam_fields(int64_t n, const int64_t* map_rows, const uint8_t* mask, double* steps, int64_t n_fields,
                 T* const* param, const T* const* grad, T* const* exp_avg, T* const* exp_avg_sq,
                 const int64_t* widths, const double* lrs, double beta1, double beta2, double eps, int threads) {
  int64_t row_width = 0;
  for (int64_t f = 0; f < n_fields; ++f) row_width += widths[f];
  const int64_t chunk = std::max<int64_t>(64, (1 << 14) / std::max<int64_t>(row_width, 1));
  const int64_t n_chunks = (n + chunk - 1) / chunk;
  threads = std::max(1, std::min<int>(threads, (int)std::max<int64_t>(n_chunks, 1)));
  const double log_b1 = std::log(beta1), log_b2 = std::log(beta2);
  const T b1 = T(beta1), b2 = T(beta2), e = T(eps);
#pragma omp parallel for schedule(static) num_threads(threads)  // PyTorch's thread team (see rasterize_cpu.cpp)
  for (int64_t c = 0; c < n_chunks; ++c) {
    for (int64_t i = c * chunk; i < std::min(n, (c + 1) * chunk); ++i) {
      if (mask != nullptr && !mask[i]) continue;
      const int64_t r = map_rows != nullptr ? map_rows[i] : i;
      const double s = steps[r] += 1.0;
      const T c1 = T(1.0 - std::exp(s * log_b1)), c2 = T(1.0 - std::exp(s * log_b2));
      for (int64_t f = 0; f < n_fields; ++f) {
        const int64_t w = widths[f];
        adam_row_any<T>(w, param[f] + r * w, grad[f] + i * w, exp_avg[f] + r * w, exp_avg_sq[f] + r * w, c1, c2,
                        T(lrs[f]), b1, b2, e);
      }
    }
  }
}

}  // namespace

extern "C" {
void clipgs_adam_fields_f32(int64_t n, const int64_t* map_rows, const uint8_t* mask, double* steps, int64_t n_fields,
                            float* const* param, const float* const* grad, float* const* exp_avg,
                            float* const* exp_avg_sq, const int64_t* widths, const double* lrs, double beta1,
                            double beta2, double eps, int threads) {
  adam_fields(n, map_rows, mask, steps, n_fields, param, grad, exp_avg, exp_avg_sq, widths, lrs, beta1, beta2, eps,
              threads);
}
void clipgs_adam_fields_f64(int64_t n, const int64_t* map_rows, const uint8_t* mask, double* steps,
                            int64_t n_fields, double* const* param, const double* const* grad,
                            double* const* exp_avg, double* const* exp_avg_sq, const int64_t* widths,
                            const double* lrs, double beta1, double beta2, double eps, int threads) {
  adam_fields(n, map_rows, mask, steps, n_fields, param, grad, exp_avg, exp_avg_sq, widths, lrs, beta1, beta2, eps,
              threads);
}
}
