// Fused Adam step for the map's per-Gaussian parameters: one pass over the rows instead of a dozen
// element-wise tensor ops. Each row (Gaussian) has its own step count, so its bias corrections
// (1 - beta^step, computed once per step for all fields by the caller) start at its first step
// (Gaussians join the map at any time). Same arithmetic as TrainableMap's PyTorch path.
// Plain C ABI, called through ctypes with raw pointers to contiguous tensors; built into the same
// library as the rasterizer (see clipgs/render/cpu_kernel.py). Two forms: every row, and listed rows.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace {

// Flat elements [begin, end) of a (rows, W) field; the row of element j is j / W (W known at compile
// time for the common widths, so the division is a multiply and the loop vectorises).
template <typename T, int W>
inline void adam_span(int64_t begin, int64_t end, int64_t width, T* __restrict p, const T* __restrict g,
                      T* __restrict m, T* __restrict v, const T* __restrict bias1,
                      const T* __restrict bias2, T lr, T b1, T b2, T eps) {
  const int64_t w = W > 0 ? W : width;
  for (int64_t j = begin; j < end; ++j) {
    const int64_t row = j / w;
    const T gj = g[j];
    const T mj = m[j] * b1 + gj * (T(1) - b1);
    const T vj = v[j] * b2 + gj * gj * (T(1) - b2);
    m[j] = mj;
    v[j] = vj;
    p[j] -= lr * (mj / bias1[row]) / (std::sqrt(vj / bias2[row]) + eps);
  }
}

template <typename T>
void adam_rows(int64_t rows, int64_t width, T* param, const T* grad, T* exp_avg, T* exp_avg_sq, const T* bias1,
               const T* bias2, double lr, double beta1, double beta2, double eps, int threads) {
  const int64_t n = rows * width, chunk = 1 << 16;
  const int64_t n_chunks = (n + chunk - 1) / chunk;
  threads = std::max(1, std::min<int>(threads, (int)std::max<int64_t>(n_chunks, 1)));
#pragma omp parallel for schedule(static) num_threads(threads)  // PyTorch's thread team (see rasterize_cpu.cpp)
  for (int64_t c = 0; c < n_chunks; ++c) {
    const int64_t b = c * chunk, e = std::min(n, b + chunk);
    const auto span = [&](auto w) {
      adam_span<T, decltype(w)::value>(b, e, width, param, grad, exp_avg, exp_avg_sq, bias1, bias2, T(lr),
                                       T(beta1), T(beta2), T(eps));
    };
    switch (width) {
      case 1: span(std::integral_constant<int, 1>{}); break;
      case 3: span(std::integral_constant<int, 3>{}); break;
      case 4: span(std::integral_constant<int, 4>{}); break;
      case 16: span(std::integral_constant<int, 16>{}); break;
      default: span(std::integral_constant<int, 0>{});
    }
  }
}

// The same step on listed rows only (selective Adam: a step touches the Gaussians its camera sees). grad,
// bias1 and bias2 are compact (one row per listed row); param, exp_avg and exp_avg_sq are the whole fields,
// updated in place at rows[i]. Rows are distinct, so threads never write the same row. Its own loop: calling
// adam_span row by row (a runtime-width division per element, no vectorising) was 5x slower at width 16.
template <typename T>
void adam_listed_rows(int64_t n_rows, int64_t width, const int64_t* rows, T* param, const T* grad, T* exp_avg,
                      T* exp_avg_sq, const T* bias1, const T* bias2, double lr, double beta1, double beta2,
                      double eps, int threads) {
  const int64_t chunk = std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(width, 1));
  const int64_t n_chunks = (n_rows + chunk - 1) / chunk;
  threads = std::max(1, std::min<int>(threads, (int)std::max<int64_t>(n_chunks, 1)));
  const T b1 = T(beta1), b2 = T(beta2), step = T(lr), e = T(eps);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t c = 0; c < n_chunks; ++c) {
    for (int64_t i = c * chunk; i < std::min(n_rows, (c + 1) * chunk); ++i) {
      const int64_t off = rows[i] * width;
      const T c1 = bias1[i], c2 = bias2[i];
      for (int64_t k = 0; k < width; ++k) {
        const T gj = grad[i * width + k];
        const T mj = exp_avg[off + k] * b1 + gj * (T(1) - b1);
        const T vj = exp_avg_sq[off + k] * b2 + gj * gj * (T(1) - b2);
        exp_avg[off + k] = mj;
        exp_avg_sq[off + k] = vj;
        param[off + k] -= step * (mj / c1) / (std::sqrt(vj / c2) + e);
      }
    }
  }
}

}  // namespace

extern "C" {
void clipgs_adam_rows_f32(int64_t n_rows, int64_t width, const int64_t* rows, float* param, const float* grad,
                          float* exp_avg, float* exp_avg_sq, const float* bias1, const float* bias2, double lr,
                          double beta1, double beta2, double eps, int threads) {
  adam_listed_rows(n_rows, width, rows, param, grad, exp_avg, exp_avg_sq, bias1, bias2, lr, beta1, beta2, eps,
                   threads);
}
void clipgs_adam_rows_f64(int64_t n_rows, int64_t width, const int64_t* rows, double* param, const double* grad,
                          double* exp_avg, double* exp_avg_sq, const double* bias1, const double* bias2, double lr,
                          double beta1, double beta2, double eps, int threads) {
  adam_listed_rows(n_rows, width, rows, param, grad, exp_avg, exp_avg_sq, bias1, bias2, lr, beta1, beta2, eps,
                   threads);
}
void clipgs_adam_f32(int64_t rows, int64_t width, float* param, const float* grad, float* exp_avg,
                     float* exp_avg_sq, const float* bias1, const float* bias2, double lr, double beta1, double beta2, double eps,
                     int threads) {
  adam_rows(rows, width, param, grad, exp_avg, exp_avg_sq, bias1, bias2, lr, beta1, beta2, eps, threads);
}
void clipgs_adam_f64(int64_t rows, int64_t width, double* param, const double* grad, double* exp_avg,
                     double* exp_avg_sq, const double* bias1, const double* bias2, double lr, double beta1, double beta2, double eps,
                     int threads) {
  adam_rows(rows, width, param, grad, exp_avg, exp_avg_sq, bias1, bias2, lr, beta1, beta2, eps, threads);
}
}
