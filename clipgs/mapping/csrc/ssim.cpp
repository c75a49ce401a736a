// Fused SSIM for the mapping loss: forward (mean SSIM and the three per-pixel partials its gradient needs)
// and backward (the gradient with respect to the rendered image), for planar (C, H, W) images.
//
// The same definition as clipgs.mapping.losses.ssim_reference: local moments (x, y, x^2, y^2, xy) blurred by
// a separable Gaussian window with zero padding, S = (2 mx my + c1)(2 sxy + c2) / ((mx^2 + my^2 + c1)(sxx +
// syy + c2)), averaged over channels and pixels. Only x (the render) gets a gradient:
//   dS/dx = G * dS/dmx + 2 x G * dS/dexx + y G * dS/dexy   (G: the same window; zero-padded and symmetric, it
// is its own adjoint). Rows run in parallel; per-row sums are added in row order, so results repeat bit for bit.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

namespace {

// out[x] = sum_k g[k] in[x + k - r] over the row, zero outside [0, w).
template <typename T>
inline void blur_row(const T* in, T* out, int64_t w, const T* g, int r) {
  std::fill(out, out + w, T(0));
  for (int k = 0; k <= 2 * r; ++k) {
    const int64_t lo = std::max<int64_t>(0, r - k), hi = std::min<int64_t>(w, w + r - k);
    const T gk = g[k];
    const int64_t shift = k - r;
    for (int64_t x = lo; x < hi; ++x) out[x] += gk * in[x + shift];
  }
}

// out_row = sum_k g[k] plane[y + k - r] (rows of width w), zero outside [0, h).
template <typename T>
inline void blur_column(const T* plane, T* out, int64_t y, int64_t h, int64_t w, const T* g, int r) {
  std::fill(out, out + w, T(0));
  for (int k = 0; k <= 2 * r; ++k) {
    const int64_t yy = y + k - r;
    if (yy < 0 || yy >= h) continue;
    const T gk = g[k];
    const T* src = plane + yy * w;
    for (int64_t x = 0; x < w; ++x) out[x] += gk * src[x];
  }
}

template <typename F>
void parallel_rows(int64_t n, int threads, F&& body) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(std::max(1, threads))
  for (int64_t i = 0; i < n; ++i) body(i);
#else
  (void)threads;
  for (int64_t i = 0; i < n; ++i) body(i);
#endif
}

// Returns sum over channels and pixels of S. partials: (3, C, H, W) dS/dmx, dS/dexx, dS/dexy, or null.
template <typename T>
double ssim_forward(int64_t C, int64_t h, int64_t w, const T* x, const T* y, const T* g, int r, double c1d,
                    double c2d, T* partials, int threads) {
  const T c1 = T(c1d), c2 = T(c2d);
  const int64_t plane = h * w;
  std::unique_ptr<T[]> horizontal(new T[5 * C * plane]);  // (C, 5, H, W): moments blurred along rows (no zeroing)
  parallel_rows(C * h, threads, [&](int64_t i) {
    const int64_t c = i / h, row = i % h;
    const T* xr = x + c * plane + row * w;
    const T* yr = y + c * plane + row * w;
    std::vector<T> prod(3 * w);
    for (int64_t p = 0; p < w; ++p) {
      prod[p] = xr[p] * xr[p];
      prod[w + p] = yr[p] * yr[p];
      prod[2 * w + p] = xr[p] * yr[p];
    }
    T* out = horizontal.get() + c * 5 * plane + row * w;
    blur_row(xr, out, w, g, r);
    blur_row(yr, out + plane, w, g, r);
    for (int m = 0; m < 3; ++m) blur_row(prod.data() + m * w, out + (2 + m) * plane, w, g, r);
  });
  std::vector<double> row_sum(C * h);
  parallel_rows(C * h, threads, [&](int64_t i) {
    const int64_t c = i / h, row = i % h;
    std::vector<T> m(5 * w);
    const T* hz = horizontal.get() + c * 5 * plane;
    for (int k = 0; k < 5; ++k) blur_column(hz + k * plane, m.data() + k * w, row, h, w, g, r);
    const T *mx = m.data(), *my = mx + w, *exx = my + w, *eyy = exx + w, *exy = eyy + w;
    double sum = 0.0;
    T* dmx = partials ? partials + c * plane + row * w : nullptr;
    T* dexx = partials ? partials + (C + c) * plane + row * w : nullptr;
    T* dexy = partials ? partials + (2 * C + c) * plane + row * w : nullptr;
    for (int64_t p = 0; p < w; ++p) {
      const T a1 = T(2) * mx[p] * my[p] + c1, a2 = T(2) * (exy[p] - mx[p] * my[p]) + c2;
      const T b1 = mx[p] * mx[p] + my[p] * my[p] + c1;
      const T b2 = (exx[p] - mx[p] * mx[p]) + (eyy[p] - my[p] * my[p]) + c2;
      const T inv = T(1) / (b1 * b2), s = a1 * a2 * inv;
      sum += double(s);
      if (partials) {
        dmx[p] = T(2) * my[p] * (a2 - a1) * inv - s * (T(2) * mx[p] / b1 - T(2) * mx[p] / b2);
        dexx[p] = -s / b2;
        dexy[p] = T(2) * a1 * inv;
      }
    }
    row_sum[i] = sum;
  });
  double total = 0.0;
  for (const double v : row_sum) total += v;
  return total;
}

// grad_x = scale * (G * dmx + 2 x G * dexx + y G * dexy).
template <typename T>
void ssim_backward(int64_t C, int64_t h, int64_t w, const T* x, const T* y, const T* g, int r, const T* partials,
                   T scale, T* grad_x, int threads) {
  const int64_t plane = h * w;
  std::unique_ptr<T[]> horizontal(new T[3 * C * plane]);
  parallel_rows(3 * C * h, threads, [&](int64_t i) {
    const int64_t k = i / h, row = i % h;  // k = map * C + c, as in partials
    blur_row(partials + k * plane + row * w, horizontal.get() + k * plane + row * w, w, g, r);
  });
  parallel_rows(C * h, threads, [&](int64_t i) {
    const int64_t c = i / h, row = i % h;
    std::vector<T> b(3 * w);
    for (int k = 0; k < 3; ++k) blur_column(horizontal.get() + (k * C + c) * plane, b.data() + k * w, row, h, w, g, r);
    const T* xr = x + c * plane + row * w;
    const T* yr = y + c * plane + row * w;
    T* out = grad_x + c * plane + row * w;
    for (int64_t p = 0; p < w; ++p) out[p] = scale * (b[p] + T(2) * xr[p] * b[w + p] + yr[p] * b[2 * w + p]);
  });
}

}  // namespace

extern "C" {

int clipgs_ssim_abi() { return 1; }

#define DEFINE_SSIM(SUFFIX, T)                                                                                  \
  double clipgs_ssim_forward_##SUFFIX(int64_t C, int64_t h, int64_t w, const T* x, const T* y, const T* taps,  \
                                      int64_t window, double c1, double c2, T* partials, int threads) {          \
    return ssim_forward<T>(C, h, w, x, y, taps, int(window / 2), c1, c2, partials, threads);                     \
  }                                                                                                               \
  void clipgs_ssim_backward_##SUFFIX(int64_t C, int64_t h, int64_t w, const T* x, const T* y, const T* taps,    \
                                     int64_t window, const T* partials, double scale, T* grad_x, int threads) { \
    ssim_backward<T>(C, h, w, x, y, taps, int(window / 2), partials, T(scale), grad_x, threads);                \
  }

DEFINE_SSIM(f32, float)
DEFINE_SSIM(f64, double)

}  // extern "C"
