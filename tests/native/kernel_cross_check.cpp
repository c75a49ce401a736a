// The vectorised float32 kernels against the scalar templates through the C ABI, as a program of its own, so a
// build for another architecture can run where Python and PyTorch do not (aarch64 under qemu-user: see
// tests/test_kernel_portability.py). Exit status 0 and "all passed" when every difference is within tolerance.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

extern "C" {
void clipgs_project_f32(int64_t, const float*, const float*, const float*, const float*, const float*, const float*,
                        int64_t, int64_t, double, double, double, float*, float*, float*, int32_t*, int);
void clipgs_project_scalar_f32(int64_t, const float*, const float*, const float*, const float*, const float*,
                               const float*, int64_t, int64_t, double, double, double, float*, float*, float*,
                               int32_t*, int);
void clipgs_bin_tiles_f32(int64_t, const float*, const int32_t*, const float*, int64_t, int64_t, int64_t, int64_t*,
                          const int64_t*, int64_t*, int);
#define SCENE const void*, const void*, const void*, const void*, const int32_t*, const int64_t*, const int64_t*, \
              const int64_t*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t
void clipgs_forward_f32(SCENE, float*, float*, float*, int32_t*, int);
void clipgs_forward_simd_f32(SCENE, const uint8_t*, float*, float*, float*, int32_t*, int);
void clipgs_backward_f32(SCENE, const float*, const int32_t*, const float*, const float*, float*, float*, float*,
                         float*, int, int);
void clipgs_backward_simd_f32(SCENE, const float*, const int32_t*, const float*, const float*, float*, float*,
                              float*, float*, int, int);
void clipgs_render_simd_f32(int64_t, const float*, const float*, const float*, const float*, const float*,
                            const float*, int64_t, int64_t, double, double, double, int64_t, const float* const*,
                            const int64_t*, const uint8_t*, float*, int32_t*, float*, float*, int);
void clipgs_fast_exp2_f32(int64_t, const float*, float*);
}

static uint64_t state = 12345;
static float uniform(float lo, float hi) {
  state = state * 6364136223846793005ull + 1442695040888963407ull;
  return lo + (hi - lo) * float((state >> 40) & 0xffffff) / float(0xffffff);
}
static double rel(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0, scale = 1e-6;
  for (size_t i = 0; i < b.size(); ++i) scale = std::fmax(scale, std::fabs(b[i]));
  for (size_t i = 0; i < b.size(); ++i) worst = std::fmax(worst, std::fabs(double(a[i]) - b[i]));
  return worst / scale;
}

int main() {
  const int64_t n = 3000, W = 90, H = 70, tile = 16, P = 19, C = 1 + P, threads = 2;
  std::vector<float> means(3 * n), quats(4 * n), ls(3 * n), opac(n), rgb(3 * n), sem(16 * n);
  for (int64_t i = 0; i < n; ++i) {
    means[3 * i] = uniform(-1.6f, 1.6f), means[3 * i + 1] = uniform(-1.3f, 1.3f), means[3 * i + 2] = uniform(2, 5);
    for (int k = 0; k < 4; ++k) quats[4 * i + k] = uniform(-1, 1);
    for (int k = 0; k < 3; ++k) ls[3 * i + k] = uniform(-3.5f, -1.5f);
    opac[i] = uniform(0.02f, 0.98f);
    for (int k = 0; k < 3; ++k) rgb[3 * i + k] = uniform(0, 1);
    for (int k = 0; k < 16; ++k) sem[16 * i + k] = uniform(-1, 1);
  }
  const float viewmat[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
  const float K[9] = {80, 0, 45, 0, 80, 35, 0, 0, 1};
  int failures = 0;
  const auto check = [&](const char* what, double err, double tol) {
    std::printf("%-48s %.3g (tolerance %.0e)%s\n", what, err, tol, err <= tol ? "" : "  FAIL");
    failures += err > tol;
  };
  // Projection: vectorised against the scalar template.
  std::vector<float> m2(2 * n), co(3 * n), dep(n), m2s(2 * n), cos_(3 * n), deps(n);
  std::vector<int32_t> rad(2 * n), rads(2 * n);
  clipgs_project_f32(n, means.data(), quats.data(), ls.data(), opac.data(), viewmat, K, W, H, 0.01, 1e10, 0.3,
                     m2.data(), co.data(), dep.data(), rad.data(), threads);
  clipgs_project_scalar_f32(n, means.data(), quats.data(), ls.data(), opac.data(), viewmat, K, W, H, 0.01, 1e10, 0.3,
                            m2s.data(), cos_.data(), deps.data(), rads.data(), threads);
  int64_t radii_differ = 0, seen = 0;
  for (int64_t i = 0; i < 2 * n; ++i) radii_differ += rad[i] != rads[i];
  for (int64_t i = 0; i < n; ++i) seen += rads[2 * i] > 0;
  std::printf("visible Gaussians: %lld of %lld\n", (long long)seen, (long long)n);
  check("projection: radii that differ", double(radii_differ), 0);
  check("projection: centres", rel(m2, m2s), 1e-6);
  check("projection: conics", rel(co, cos_), 1e-4);
  // Tiles and features (depth first, then colour and attributes), from the scalar projection.
  const int64_t tx = (W + tile - 1) / tile, ty = (H + tile - 1) / tile;
  std::vector<int64_t> count(tx * ty), start(tx * ty);
  clipgs_bin_tiles_f32(n, m2s.data(), rads.data(), deps.data(), tx, ty, tile, count.data(), nullptr, nullptr, threads);
  int64_t m = 0;
  for (int64_t t = 0; t < tx * ty; ++t) start[t] = m, m += count[t];
  std::vector<int64_t> ids(m);
  clipgs_bin_tiles_f32(n, m2s.data(), rads.data(), deps.data(), tx, ty, tile, count.data(), start.data(), ids.data(),
                       threads);
  std::vector<float> feats(C * n);
  for (int64_t i = 0; i < n; ++i) {
    feats[C * i] = deps[i];
    for (int k = 0; k < 3; ++k) feats[C * i + 1 + k] = rgb[3 * i + k];
    for (int k = 0; k < 16; ++k) feats[C * i + 4 + k] = sem[16 * i + k];
  }
#define ARGS m2s.data(), cos_.data(), opac.data(), feats.data(), rads.data(), ids.data(), start.data(), count.data(), \
             C, W, H, tx, ty, tile
  std::vector<float> out_s(H * W * C), alpha_s(H * W), T_s(H * W), out_v(H * W * C), alpha_v(H * W), T_v(H * W);
  std::vector<int32_t> last_s(H * W), last_v(H * W);
  clipgs_forward_f32(ARGS, out_s.data(), alpha_s.data(), T_s.data(), last_s.data(), threads);
  clipgs_forward_simd_f32(ARGS, nullptr, out_v.data(), alpha_v.data(), T_v.data(), last_v.data(), threads);
  check("compositing forward: image (depth + 19 channels)", rel(out_v, out_s), 1e-4);
  check("compositing forward: alpha", rel(alpha_v, alpha_s), 1e-4);
  // Backward: per-intersection gradients for random output gradients.
  std::vector<float> g_out(H * W * C), g_alpha(H * W);
  for (auto& v : g_out) v = uniform(-1, 1);
  for (auto& v : g_alpha) v = uniform(-1, 1);
  std::vector<float> gm_s(2 * m), gc_s(3 * m), go_s(m), gf_s(C * m), gm_v(2 * m), gc_v(3 * m), go_v(m), gf_v(C * m);
  clipgs_backward_f32(ARGS, T_s.data(), last_s.data(), g_out.data(), g_alpha.data(), gm_s.data(), gc_s.data(),
                      go_s.data(), gf_s.data(), 1, threads);
  clipgs_backward_simd_f32(ARGS, T_v.data(), last_v.data(), g_out.data(), g_alpha.data(), gm_v.data(), gc_v.data(),
                           go_v.data(), gf_v.data(), 1, threads);
  check("compositing backward: dL/dmeans2d", rel(gm_v, gm_s), 1e-3);
  check("compositing backward: dL/dconics", rel(gc_v, gc_s), 1e-3);
  check("compositing backward: dL/dopacity", rel(go_v, go_s), 1e-3);
  check("compositing backward: dL/dfeatures", rel(gf_v, gf_s), 1e-3);
  // The one-call render (vectorised projection, binning, compositing) against the scalar pipeline.
  const float* parts[2] = {rgb.data(), sem.data()};
  const int64_t part_channels[2] = {3, 16};
  std::vector<float> m2o(2 * n), out_o(H * W * C), alpha_o(H * W);
  std::vector<int32_t> rado(2 * n);
  clipgs_render_simd_f32(n, means.data(), quats.data(), ls.data(), opac.data(), viewmat, K, W, H, 0.01, 1e10, 0.3, 2,
                         parts, part_channels, nullptr, m2o.data(), rado.data(), out_o.data(), alpha_o.data(), threads);
  check("one-call render: image", rel(out_o, out_s), 1e-4);
  check("one-call render: alpha", rel(alpha_o, alpha_s), 1e-4);
  // 2^y.
  std::vector<float> y(20001), e(20001);
  for (int i = 0; i <= 20000; ++i) y[i] = -126.f * float(i) / 20000.f;
  clipgs_fast_exp2_f32(20001, y.data(), e.data());
  double worst = 0;
  for (int i = 0; i <= 20000; ++i) worst = std::fmax(worst, std::fabs(e[i] / std::exp2(double(y[i])) - 1));
  check("fast_exp2: relative error over [-126, 0]", worst, 3e-6);
  std::printf(failures ? "%d FAILED\n" : "all passed\n", failures);
  return failures ? 1 : 0;
}
