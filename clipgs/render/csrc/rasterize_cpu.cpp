// Exact tile-based Gaussian compositing for the CPU: forward and hand-written backward.
//
// Same image as gsplat's classic rasterizer and clipgs' PyTorch backend: per pixel, Gaussians in depth
// order; alpha = min(0.999, o * exp(-sigma)); skipped when sigma < 0 or alpha < 1/255; the pixel stops
// (exclusive) when transmittance would fall to 1e-4. Each Gaussian is only evaluated on the pixels of
// its opacity-aware bounding box (outside it alpha < 1/255 by construction), so work scales with
// footprint, not tile size; the vectorised kernels narrow that to the row segments its ellipse reaches.
// Tiles run in parallel (OpenMP on PyTorch's thread team; see parallel_tiles).
//
// Backward writes gradients per (tile, Gaussian) intersection; the caller sums them per Gaussian, so
// threads never race. A render that wants no gradient runs projection, gathering, binning and compositing in
// one call (render_simd). Plain C ABI, called through ctypes with raw pointers to contiguous tensors.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>
#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace {

struct SplatRecord;  // below: one Gaussian's compositing inputs packed

template <typename T>
struct Scene {
  const T* means2d;            // [N, 2] pixel coordinates, pixel centres at +0.5
  const T* conics;             // [N, 3] (a, b, c) of the inverse 2D covariance
  const T* opacities;          // [N]
  const T* feats;              // [N, C]
  const int32_t* radii;        // [N, 2]
  const int64_t* ids;          // [M] Gaussian ids, sorted by tile then depth
  const int64_t* tile_start;   // [tiles]
  const int64_t* tile_count;   // [tiles]
  int64_t C, width, height, tiles_x, tiles_y, tile;
  const SplatRecord* records = nullptr;  // [N] the same per-Gaussian values packed (render_simd), or null
};

template <typename T>
inline T alpha_threshold() { return T(1.0 / 255.0); }
template <typename T>
inline T max_alpha() { return T(0.999); }
template <typename T>
inline T trans_eps() { return T(1e-4); }

// An upper bound of log(x) for x >= 1: the exponent plus the tangent of log2 at sqrt(2) for the mantissa m in
// [1, 2) (a concave function lies below its tangents), times log(2); at most 0.07 above log(x), below it only by
// float rounding (3.6e-7 at the tangent point).
inline float log_upper(float x) {
  int32_t bits;
  __builtin_memcpy(&bits, &x, sizeof bits);
  const int32_t e = ((bits >> 23) & 0xff) - 127;
  const int32_t mbits = (bits & 0x7fffff) | 0x3f800000;
  float m;
  __builtin_memcpy(&m, &mbits, sizeof m);
  return (float(e) + 0.5f + (m - 1.41421356f) * 1.02014134f) * 0.69314718f;
}

// The constants of a splat's row intervals (see Reach): the same on every tile it touches, so computed once per
// Gaussian where records are packed (render_simd; a division and a log fewer per tile entry).
struct ReachShape { float k_dy2, k_0, slope, r_scale; };
inline ReachShape reach_shape(float ca, float cb, float cc, float o) {
  const float S = log_upper(o / alpha_threshold<float>()) + 1e-3f, inv_ca = 1.f / ca;
  return ReachShape{cb * cb - ca * cc, 2.f * ca * S, cb * inv_ca, inv_ca};
}

// One Gaussian's compositing inputs in one 48-byte record, so gathering a tile's splats (which lie scattered
// through the map in depth order) reads one record per splat instead of four arrays' worth.
struct SplatRecord {
  float mx, my, ca, cb, cc, o;
  int32_t rx, ry;
  ReachShape shape;
};

// Depth and RGB: the channels whose gradients always reach the geometry (means, conics, opacities). The
// backwards take `attributes_move_geometry`: 0 keeps the attribute channels after them out of dL/dalpha, so
// a loss on them trains the attributes alone (a semantic loss then never bends the geometry). The vectorised
// backward also takes kFeaturesOnly: the features' gradients alone (w * dL/dout), no dL/dalpha at all, the
// geometry's gradients left 0 (a step whose geometry takes no gradient; the scalar kernels compute them all).
constexpr int64_t kGeometryChannels = 4;
constexpr int kFeaturesOnly = 2;

struct Box { int64_t x0, x1, y0, y1; };  // inclusive pixel ranges, already clipped

// Pixels whose centres lie inside the Gaussian's box, clipped to the tile and the image.
template <typename T>
inline Box pixel_box(const Scene<T>& s, T mx, T my, T rx, T ry, int64_t tx0, int64_t ty0) {
  Box b;
  b.x0 = std::max<int64_t>(tx0, (int64_t)std::ceil(mx - rx - T(0.5)));
  b.x1 = std::min<int64_t>(std::min(tx0 + s.tile, s.width) - 1, (int64_t)std::floor(mx + rx - T(0.5)));
  b.y0 = std::max<int64_t>(ty0, (int64_t)std::ceil(my - ry - T(0.5)));
  b.y1 = std::min<int64_t>(std::min(ty0 + s.tile, s.height) - 1, (int64_t)std::floor(my + ry - T(0.5)));
  return b;
}
template <typename T>
inline Box pixel_box(const Scene<T>& s, int64_t g, int64_t tx0, int64_t ty0) {
  return pixel_box(s, s.means2d[2 * g], s.means2d[2 * g + 1], T(s.radii[2 * g]), T(s.radii[2 * g + 1]), tx0, ty0);
}

// Work items 0..n-1 over `threads` threads, dynamically scheduled. With OpenMP this runs on the same
// thread team as PyTorch's own CPU ops (the process has one libgomp: the loader matches ours to the
// one torch loaded first), so those threads do our work instead of spinning beside it and halving our
// share of the cores; without OpenMP, plain std::threads.
template <typename F>
void parallel_tiles(int64_t n_tiles, int threads, F&& work) {
  threads = std::max(1, std::min<int>(threads, (int)std::max<int64_t>(n_tiles, 1)));
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t t = 0; t < n_tiles; ++t) work(t);
#else
  std::atomic<int64_t> next{0};
  auto run = [&]() {
    for (int64_t t = next++; t < n_tiles; t = next++) work(t);
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back(run);
  run();
  for (auto& th : pool) th.join();
#endif
}


// Every intermediate of the EWA projection of one Gaussian; shared by the projection and its backward.
template <typename T>
struct Ewa {
  T mc[3];                  // mean in the camera frame
  T tz;                     // depth used for division (1 when outside [near, far], as in the PyTorch projection)
  bool in_depth;
  T qn, w, x, y, z;         // quaternion norm and normalised components
  T R[9], sc[3], Mc[9];     // rotation, scales, camera-frame covariance factor Rv R diag(s)
  T cux, cuy;               // x/z, y/z clamped to 1.3x the field of view
  bool free_x, free_y;      // the clamp did not bite (its gradient passes)
  T J[6], JM[6];            // Jacobian and J Mc: the 2D covariance is (J Mc)(J Mc)^T
  T a, b, c;                // 2D covariance (+ eps2d on the diagonal)
};

// The camera's constants, computed once per call (not once per Gaussian) and held by value, so the loops read
// them from registers: viewmat (camera_from_world, row-major [3, 4]), intrinsics, and the projection's clamp of
// x/z and y/z to 1.3x the field of view.
template <typename T>
struct Lens {
  T vm[12], fx, fy, cx, cy, lim_x_pos, lim_x_neg, lim_y_pos, lim_y_neg;
  Lens(const T* viewmat, const T* K, int64_t width, int64_t height) : fx(K[0]), fy(K[4]), cx(K[2]), cy(K[5]) {
    std::copy(viewmat, viewmat + 12, vm);
    const T tan_fovx = T(0.5) * T(width) / fx, tan_fovy = T(0.5) * T(height) / fy;
    lim_x_pos = (T(width) - cx) / fx + T(0.3) * tan_fovx, lim_x_neg = cx / fx + T(0.3) * tan_fovx;
    lim_y_pos = (T(height) - cy) / fy + T(0.3) * tan_fovy, lim_y_neg = cy / fy + T(0.3) * tan_fovy;
  }
};

template <typename T>
inline Ewa<T> ewa(const T* m, const T* q, const T* log_scales, const Lens<T>& L, T near_plane, T far_plane,
                  T eps2d) {
  Ewa<T> e;
  const T* viewmat = L.vm;
  for (int r = 0; r < 3; ++r)
    e.mc[r] = viewmat[4 * r] * m[0] + viewmat[4 * r + 1] * m[1] + viewmat[4 * r + 2] * m[2] + viewmat[4 * r + 3];
  e.in_depth = e.mc[2] > near_plane && e.mc[2] < far_plane;
  e.tz = e.in_depth ? e.mc[2] : T(1);
  e.qn = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
  const T w = q[0] / e.qn, x = q[1] / e.qn, y = q[2] / e.qn, z = q[3] / e.qn;
  e.w = w, e.x = x, e.y = y, e.z = z;
  const T R[9] = {1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                  2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                  2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)};
  std::copy(R, R + 9, e.R);
  T M[9];  // world covariance = M M^T, M = R diag(s)
  for (int k = 0; k < 3; ++k) e.sc[k] = std::exp(log_scales[k]);
  for (int r = 0; r < 3; ++r)
    for (int k = 0; k < 3; ++k) M[3 * r + k] = R[3 * r + k] * e.sc[k];
  for (int r = 0; r < 3; ++r)
    for (int k = 0; k < 3; ++k)
      e.Mc[3 * r + k] = viewmat[4 * r] * M[k] + viewmat[4 * r + 1] * M[3 + k] + viewmat[4 * r + 2] * M[6 + k];
  const T fx = L.fx, fy = L.fy, tz = e.tz;
  const T ux = e.mc[0] / tz, uy = e.mc[1] / tz;
  e.free_x = ux >= -L.lim_x_neg && ux <= L.lim_x_pos;
  e.free_y = uy >= -L.lim_y_neg && uy <= L.lim_y_pos;
  e.cux = std::min(std::max(ux, -L.lim_x_neg), L.lim_x_pos);
  e.cuy = std::min(std::max(uy, -L.lim_y_neg), L.lim_y_pos);
  const T txc = tz * e.cux, tyc = tz * e.cuy;
  const T J[6] = {fx / tz, 0, -fx * txc / (tz * tz), 0, fy / tz, -fy * tyc / (tz * tz)};
  std::copy(J, J + 6, e.J);
  for (int r = 0; r < 2; ++r)
    for (int k = 0; k < 3; ++k)
      e.JM[3 * r + k] = J[3 * r] * e.Mc[k] + J[3 * r + 1] * e.Mc[3 + k] + J[3 * r + 2] * e.Mc[6 + k];
  const T* JM = e.JM;
  e.a = JM[0] * JM[0] + JM[1] * JM[1] + JM[2] * JM[2] + eps2d;
  e.b = JM[0] * JM[3] + JM[1] * JM[4] + JM[2] * JM[5];
  e.c = JM[3] * JM[3] + JM[4] * JM[4] + JM[5] * JM[5] + eps2d;
  return e;
}

// An observed surface that hides what lies behind it: far (H, W) is the farthest observed depth within `radius`
// pixels of each pixel (+inf where unknown). A Gaussian whose whole footprint (its reach) fits in that radius and
// whose nearest point (depth - 3 x its largest scale) lies more than `margin` beyond far at the image pixel
// nearest its centre is behind the surface on every pixel it could touch.
template <typename T>
struct Occluder {
  const T* far;
  int64_t radius;
  T margin;
};

// EWA projection, the same math as the PyTorch projection; its gradient is `project_backward` below.
// viewmat: camera_from_world row-major [4, 4]; K row-major [3, 3] in gsplat's convention (+0.5 px).
// Off-screen cull before the covariance: |row of J Mc| <= |row of J| * largest scale, and |row of J| is
// at most f/z * sqrt(1 + lim^2) (the clamp), so `reach` bounds the radius the full projection would find;
// a Gaussian out of the image by more than that is dropped by it anyway (same output, far less work).
template <typename T>
struct Cull {
  const T* viewmat;
  T fx, fy, cx, cy, lim_x, lim_y, width, height, near_plane, far_plane, eps2d;
  Cull(const T* vm, const T* K, int64_t w, int64_t h, T near, T far, T eps)
      : viewmat(vm), fx(K[0]), fy(K[4]), cx(K[2]), cy(K[5]), width(T(w)), height(T(h)), near_plane(near),
        far_plane(far), eps2d(eps) {
    lim_x = std::max((width - cx) / fx, cx / fx) + T(0.3) * T(0.5) * width / fx;
    lim_y = std::max((height - cy) / fy, cy / fy) + T(0.3) * T(0.5) * height / fy;
  }
  T depth(const T* m) const { return viewmat[8] * m[0] + viewmat[9] * m[1] + viewmat[10] * m[2] + viewmat[11]; }
  // False when the projection would surely drop the Gaussian (depth, opacity, or off the image by its reach),
  // or, given `occ`, when an observed surface hides it (see Occluder).
  bool maybe(const T* m, const T* ls, T opacity, T z, const Occluder<T>* occ = nullptr) const {
    if (!(z > near_plane && z < far_plane) || opacity < alpha_threshold<T>()) return false;
    const T s_max = std::exp(std::max(ls[0], std::max(ls[1], ls[2])));
    const T mx = fx * (viewmat[0] * m[0] + viewmat[1] * m[1] + viewmat[2] * m[2] + viewmat[3]) / z + cx;
    const T my = fy * (viewmat[4] * m[0] + viewmat[5] * m[1] + viewmat[6] * m[2] + viewmat[7]) / z + cy;
    const T reach_x = T(3.33) * std::sqrt(fx * fx / (z * z) * (T(1) + lim_x * lim_x) * s_max * s_max + eps2d) + 1;
    const T reach_y = T(3.33) * std::sqrt(fy * fy / (z * z) * (T(1) + lim_y * lim_y) * s_max * s_max + eps2d) + 1;
    if (mx + reach_x <= 0 || mx - reach_x >= width || my + reach_y <= 0 || my - reach_y >= height) return false;
    if (occ == nullptr || reach_x > T(occ->radius) || reach_y > T(occ->radius)) return true;
    // The image pixel nearest the centre: every pixel the footprint touches is within its reach of it, per axis.
    const int64_t px = (int64_t)std::min(std::max(mx, T(0)), width - 1);
    const int64_t py = (int64_t)std::min(std::max(my, T(0)), height - 1);
    return !(z - T(3) * s_max > occ->far[py * (int64_t)width + px] + occ->margin);
  }
};

// The cull alone: keep[i] = 1 where `project` might give Gaussian i a footprint (a superset of radii > 0).
// occ_far: null, or the Occluder's far image (H, W), with occ_radius and occ_margin.
template <typename T>
void cull(int64_t n, const T* means, const T* log_scales, const T* opacities, const T* viewmat, const T* K,
          int64_t width, int64_t height, T near_plane, T far_plane, T eps2d, const T* occ_far, int64_t occ_radius,
          T occ_margin, uint8_t* keep, int threads) {
  const Cull<T> cu(viewmat, K, width, height, near_plane, far_plane, eps2d);
  const Occluder<T> occ{occ_far, occ_radius, occ_margin};
  const Occluder<T>* hides = occ_far != nullptr ? &occ : nullptr;
  const int64_t chunk = 8192;
  parallel_tiles((n + chunk - 1) / chunk, threads, [&](int64_t c) {
    for (int64_t i = c * chunk; i < std::min(n, (c + 1) * chunk); ++i)
      keep[i] = cu.maybe(means + 3 * i, log_scales + 3 * i, opacities[i], cu.depth(means + 3 * i), hides) ? 1 : 0;
  });
}

template <typename T>
void project(int64_t n, const T* means, const T* quats, const T* log_scales, const T* opacities, const T* viewmat,
             const T* K, int64_t width, int64_t height, T near_plane, T far_plane, T eps2d, T* means2d, T* conics,
             T* depths, int32_t* radii, int threads) {
  const int64_t chunk = 4096;
  const Cull<T> cu(viewmat, K, width, height, near_plane, far_plane, eps2d);
  const Lens<T> lens(viewmat, K, width, height);
  const T fx = lens.fx, fy = lens.fy, cx = lens.cx, cy = lens.cy;
  parallel_tiles((n + chunk - 1) / chunk, threads, [&](int64_t c) {
    for (int64_t i = c * chunk; i < std::min(n, (c + 1) * chunk); ++i) {
      const T* m = means + 3 * i;
      const T z = cu.depth(m);
      depths[i] = z;
      radii[2 * i] = radii[2 * i + 1] = 0;
      means2d[2 * i] = means2d[2 * i + 1] = 0;
      conics[3 * i] = conics[3 * i + 1] = conics[3 * i + 2] = 0;
      if (!cu.maybe(m, log_scales + 3 * i, opacities[i], z)) continue;  // cheap cull first
      const Ewa<T> e = ewa(m, quats + 4 * i, log_scales + 3 * i, lens, near_plane, far_plane, eps2d);
      const T a = e.a, b = e.b, cc = e.c, tz = e.tz;
      const T det = a * cc - b * b;
      const T o = opacities[i];
      if (!e.in_depth || !(det > 0) || o < alpha_threshold<T>()) continue;
      const T mx = fx * e.mc[0] / tz + cx, my = fy * e.mc[1] / tz + cy;
      const T extent = std::min(std::sqrt(T(2) * std::log(o / alpha_threshold<T>())), T(3.33));
      const T rx = std::ceil(extent * std::sqrt(a)), ry = std::ceil(extent * std::sqrt(cc));
      if (!(rx > 0 || ry > 0)) continue;
      if (mx + rx <= 0 || mx - rx >= T(width) || my + ry <= 0 || my - ry >= T(height)) continue;
      means2d[2 * i] = mx;
      means2d[2 * i + 1] = my;
      conics[3 * i] = cc / det;
      conics[3 * i + 1] = -b / det;
      conics[3 * i + 2] = a / det;
      radii[2 * i] = (int32_t)rx;
      radii[2 * i + 1] = (int32_t)ry;
    }
  });
}

// Backward of `project` for Gaussians it kept (radii > 0): gradients of means2d, conics, depths ->
// means, quats, log_scales. The same chain as the PyTorch projection under autograd (clamp included).
template <typename T>
void project_backward(int64_t n, const T* means, const T* quats, const T* log_scales, const T* viewmat, const T* K,
                      int64_t width, int64_t height, T eps2d, const int32_t* radii, const T* g_means2d,
                      const T* g_conics, const T* g_depths, T* g_means, T* g_quats, T* g_log_scales, int threads) {
  const int64_t chunk = 4096;
  const Lens<T> lens(viewmat, K, width, height);
  parallel_tiles((n + chunk - 1) / chunk, threads, [&](int64_t ci) {
    for (int64_t i = ci * chunk; i < std::min(n, (ci + 1) * chunk); ++i) {
      for (int k = 0; k < 3; ++k) g_means[3 * i + k] = g_log_scales[3 * i + k] = 0;
      for (int k = 0; k < 4; ++k) g_quats[4 * i + k] = 0;
      if (radii[2 * i] <= 0 && radii[2 * i + 1] <= 0) continue;
      const Ewa<T> e = ewa(means + 3 * i, quats + 4 * i, log_scales + 3 * i, lens, T(0),
                           std::numeric_limits<T>::infinity(), eps2d);  // kept Gaussians: in depth
      const T *mc = e.mc, *R = e.R, *sc = e.sc, *Mc = e.Mc, *J = e.J, *JM = e.JM;
      const T tz = e.tz, tz2 = tz * tz, txc = tz * e.cux, tyc = tz * e.cuy, cux = e.cux, cuy = e.cuy;
      const T w = e.w, x = e.x, y = e.y, z = e.z, qn = e.qn, a = e.a, b = e.b, c = e.c;
      const bool free_x = e.free_x, free_y = e.free_y;
      const T fx = K[0], fy = K[4];
      const T det = a * c - b * b, det2 = det * det;
      // conics (c, -b, a) / det -> a, b, c
      const T gA = g_conics[3 * i], gB = g_conics[3 * i + 1], gC = g_conics[3 * i + 2];
      const T ga = gA * (-c * c / det2) + gB * (b * c / det2) + gC * (T(1) / det - a * c / det2);
      const T gb = gA * (T(2) * b * c / det2) + gB * (-(det + T(2) * b * b) / det2) + gC * (T(2) * a * b / det2);
      const T gc = gA * (T(1) / det - a * c / det2) + gB * (a * b / det2) + gC * (-a * a / det2);
      T gJM[6];
      for (int k = 0; k < 3; ++k) {
        gJM[k] = T(2) * ga * JM[k] + gb * JM[3 + k];
        gJM[3 + k] = T(2) * gc * JM[3 + k] + gb * JM[k];
      }
      T gJ[6], gMc[9];
      for (int r = 0; r < 2; ++r)
        for (int k = 0; k < 3; ++k)
          gJ[3 * r + k] = gJM[3 * r] * Mc[3 * k] + gJM[3 * r + 1] * Mc[3 * k + 1] + gJM[3 * r + 2] * Mc[3 * k + 2];
      for (int r = 0; r < 3; ++r)
        for (int k = 0; k < 3; ++k) gMc[3 * r + k] = J[r] * gJM[k] + J[3 + r] * gJM[3 + k];
      T gmc[3] = {0, 0, g_depths[i]};
      gmc[2] += gJ[0] * (-fx / tz2) + gJ[2] * (T(2) * fx * txc / (tz2 * tz)) + gJ[4] * (-fy / tz2) +
                gJ[5] * (T(2) * fy * tyc / (tz2 * tz));
      const T g_txc = gJ[2] * (-fx / tz2), g_tyc = gJ[5] * (-fy / tz2);
      if (free_x) gmc[0] += g_txc; else gmc[2] += g_txc * cux;
      if (free_y) gmc[1] += g_tyc; else gmc[2] += g_tyc * cuy;
      const T gmx = g_means2d[2 * i], gmy = g_means2d[2 * i + 1];
      gmc[0] += gmx * fx / tz;
      gmc[1] += gmy * fy / tz;
      gmc[2] += -gmx * fx * mc[0] / tz2 - gmy * fy * mc[1] / tz2;
      for (int k = 0; k < 3; ++k)  // mc = Rv m + t
        g_means[3 * i + k] = viewmat[k] * gmc[0] + viewmat[4 + k] * gmc[1] + viewmat[8 + k] * gmc[2];
      T gM[9];  // Mc = Rv M
      for (int r = 0; r < 3; ++r)
        for (int k = 0; k < 3; ++k)
          gM[3 * r + k] = viewmat[r] * gMc[k] + viewmat[4 + r] * gMc[3 + k] + viewmat[8 + r] * gMc[6 + k];
      T gR[9];
      for (int k = 0; k < 3; ++k) {
        T gs = 0;
        for (int r = 0; r < 3; ++r) {
          gR[3 * r + k] = gM[3 * r + k] * sc[k];
          gs += gM[3 * r + k] * R[3 * r + k];
        }
        g_log_scales[3 * i + k] = gs * sc[k];
      }
      const T gw = T(2) * (-z * gR[1] + y * gR[2] + z * gR[3] - x * gR[5] - y * gR[6] + x * gR[7]);
      const T gx = T(2) * (y * gR[1] + z * gR[2] + y * gR[3] - T(2) * x * gR[4] - w * gR[5] + z * gR[6] + w * gR[7] -
                           T(2) * x * gR[8]);
      const T gy = T(2) * (-T(2) * y * gR[0] + x * gR[1] + w * gR[2] + x * gR[3] + z * gR[5] - w * gR[6] +
                           z * gR[7] - T(2) * y * gR[8]);
      const T gz = T(2) * (-T(2) * z * gR[0] - w * gR[1] + x * gR[2] + w * gR[3] - T(2) * z * gR[4] + y * gR[5] +
                           x * gR[6] + y * gR[7]);
      const T dot = w * gw + x * gx + y * gy + z * gz;  // through the normalisation q / |q|
      g_quats[4 * i] = (gw - w * dot) / qn;
      g_quats[4 * i + 1] = (gx - x * dot) / qn;
      g_quats[4 * i + 2] = (gy - y * dot) / qn;
      g_quats[4 * i + 3] = (gz - z * dot) / qn;
    }
  });
}

// Visible Gaussians (radii > 0) by depth, ties by index: a stable LSD radix sort on (depth bits, index) pairs
// (depth > near > 0, so the bit patterns order like the values), 11 bits of the depth per pass; the digit
// histograms of every pass come from one read, and a pass whose digit is the same for every key (the exponent's
// bits, over a room's depths) is skipped. float32: 2 passes of 3 on a 640x480 view, each pair packed in one
// 64-bit word (half the bytes a pass moves of a 16-byte pair; a float32 map holds far fewer than 2^32
// Gaussians); float64: 16-byte pairs. ranks: the order as ranks among the visible Gaussians (their rows once
// gathered in index order, as render_simd does) instead of indices; the same order.
template <typename T>
std::vector<int64_t> depth_order(int64_t n, const int32_t* radii, const T* depths, bool ranks = false) {
  using Key = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
  constexpr bool kPacked = sizeof(T) == 4;
  struct Pair { Key key; int64_t g; };
  using Item = typename std::conditional<kPacked, uint64_t, Pair>::type;
  const auto key_of = [](const Item& it) -> Key {
    if constexpr (kPacked) return Key(it >> 32); else return it.key;
  };
  constexpr int kBits = 11, kDigits = 1 << kBits, kPasses = (8 * sizeof(Key) + kBits - 1) / kBits;
  std::vector<Item> items, tmp;
  items.reserve(n);
  std::vector<int64_t> hist(size_t(kPasses) * kDigits, 0);
  for (int64_t g = 0; g < n; ++g) {
    if (radii[2 * g] <= 0 && radii[2 * g + 1] <= 0) continue;
    Key bits;
    std::memcpy(&bits, depths + g, sizeof bits);
    const int64_t id = ranks ? (int64_t)items.size() : g;
    if constexpr (kPacked) items.push_back((uint64_t(bits) << 32) | uint64_t(id)); else items.push_back({bits, id});
    for (int p = 0; p < kPasses; ++p) ++hist[size_t(p) * kDigits + ((bits >> (p * kBits)) & (kDigits - 1))];
  }
  tmp.resize(items.size());
  const int64_t m = (int64_t)items.size();
  for (int p = 0; p < kPasses; ++p) {
    int64_t* h = hist.data() + size_t(p) * kDigits;
    if (std::any_of(h, h + kDigits, [m](int64_t c) { return c == m; })) continue;  // one digit: already in order
    int64_t sum = 0;
    for (int b = 0; b < kDigits; ++b) {
      const int64_t c = h[b];
      h[b] = sum;
      sum += c;
    }
    for (const Item& it : items) tmp[h[(key_of(it) >> (p * kBits)) & (kDigits - 1)]++] = it;
    items.swap(tmp);
  }
  std::vector<int64_t> order(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    if constexpr (kPacked) order[i] = int64_t(items[i] & 0xffffffffu); else order[i] = items[i].g;
  }
  return order;
}

// An uninitialised array (std::vector would zero it first: a memset of every buffer of a render).
template <typename T>
std::unique_ptr<T[]> scratch(int64_t n) { return std::unique_ptr<T[]>(new T[std::max<int64_t>(n, 1)]); }

struct TileRect { int32_t x0, x1, y0, y1; };  // tiles [x0, x1) x [y0, y1)

// The tiles a Gaussian's footprint touches.
template <typename T>
inline TileRect tile_rect(const T* means2d, const int32_t* radii, int64_t g, int64_t tiles_x, int64_t tiles_y,
                          int64_t tile) {
  const T mx = means2d[2 * g], my = means2d[2 * g + 1], rx = T(radii[2 * g]), ry = T(radii[2 * g + 1]);
  const auto edge = [tile](T v, bool up, int64_t hi) {  // the tile index of a box edge, clamped to [0, hi]
    const int64_t t = (int64_t)(up ? std::ceil(v / T(tile)) : std::floor(v / T(tile)));
    return std::min<int64_t>(std::max<int64_t>(t, 0), hi);
  };
  return TileRect{(int32_t)edge(mx - rx, false, tiles_x), (int32_t)edge(mx + rx, true, tiles_x),
                  (int32_t)edge(my - ry, false, tiles_y), (int32_t)edge(my + ry, true, tiles_y)};
}

// Tile lists in one go, given the Gaussians with a footprint in depth order (depth_order): contiguous ranges of
// that order (one per thread) count the tiles of their footprints, computed once and kept, and fill their own
// stretch of every tile's list, so every list comes out sorted (depth, then index) without a per-tile sort, in
// parallel, and the same lists on any number of threads. Writes tile_count and tile_start, and ids into
// ids_for(total) (a callable that returns room for that many).
template <typename T, typename IdsFor>
void bin_in_order(const std::vector<int64_t>& order, const T* means2d, const int32_t* radii, int64_t tiles_x,
                  int64_t tiles_y, int64_t tile, int64_t* tile_count, int64_t* tile_start, IdsFor ids_for,
                  int threads) {
  const int64_t n_tiles = tiles_x * tiles_y;
  const int64_t v = (int64_t)order.size();
  const int ranges = (int)std::max<int64_t>(1, std::min<int64_t>(threads, v / 8192));
  const auto rects = scratch<TileRect>(v);  // by position in the order
  std::vector<int64_t> cursor(size_t(ranges) * n_tiles, 0);  // per range: its tile counts, then its cursors
  parallel_tiles(ranges, threads, [&](int64_t r) {
    int64_t* counts = cursor.data() + r * n_tiles;
    constexpr int64_t kAhead = 16;  // depth order scatters the Gaussians through the arrays: fetch ahead
    for (int64_t j = v * r / ranges, end = v * (r + 1) / ranges; j < end; ++j) {
      if (j + kAhead < end)
        __builtin_prefetch(means2d + 2 * order[j + kAhead]), __builtin_prefetch(radii + 2 * order[j + kAhead]);
      const TileRect t = rects[j] = tile_rect(means2d, radii, order[j], tiles_x, tiles_y, tile);
      for (int64_t ty = t.y0; ty < t.y1; ++ty)
        for (int64_t tx = t.x0; tx < t.x1; ++tx) ++counts[ty * tiles_x + tx];
    }
  });
  int64_t m = 0;
  for (int64_t t = 0; t < n_tiles; ++t) {
    tile_start[t] = m;
    for (int r = 0; r < ranges; ++r) {
      const int64_t c = cursor[r * n_tiles + t];
      cursor[r * n_tiles + t] = m;
      m += c;
    }
    tile_count[t] = m - tile_start[t];
  }
  int64_t* ids = ids_for(m);
  parallel_tiles(ranges, threads, [&](int64_t r) {
    int64_t* next = cursor.data() + r * n_tiles;
    for (int64_t j = v * r / ranges, end = v * (r + 1) / ranges; j < end; ++j) {
      const TileRect& t = rects[j];
      for (int64_t ty = t.y0; ty < t.y1; ++ty)
        for (int64_t tx = t.x0; tx < t.x1; ++tx) ids[next[ty * tiles_x + tx]++] = order[j];
    }
  });
}

// Tile binning for callers that allocate the lists: count (tile_count; ids null: a histogram per thread over
// the Gaussians, summed), then fill (ids sorted by depth, then index, per tile; see bin_in_order).
template <typename T>
void bin_tiles(int64_t n, const T* means2d, const int32_t* radii, const T* depths, int64_t tiles_x, int64_t tiles_y,
               int64_t tile, int64_t* tile_count, const int64_t* tile_start, int64_t* ids, int threads) {
  const int64_t n_tiles = tiles_x * tiles_y;
  if (ids == nullptr) {
    threads = std::max(1, std::min<int>(threads, (int)std::max<int64_t>(n / 8192, 1)));
    std::vector<std::vector<int64_t>> counts(threads, std::vector<int64_t>(n_tiles, 0));
    parallel_tiles(threads, threads, [&](int64_t part) {
      int64_t* c = counts[part].data();
      for (int64_t g = n * part / threads, end = n * (part + 1) / threads; g < end; ++g) {
        if (radii[2 * g] <= 0 && radii[2 * g + 1] <= 0) continue;
        const TileRect r = tile_rect(means2d, radii, g, tiles_x, tiles_y, tile);
        for (int64_t ty = r.y0; ty < r.y1; ++ty)
          for (int64_t tx = r.x0; tx < r.x1; ++tx) ++c[ty * tiles_x + tx];
      }
    });
    for (int64_t t = 0; t < n_tiles; ++t) {
      int64_t sum = 0;
      for (const auto& c : counts) sum += c[t];
      tile_count[t] = sum;
    }
    return;
  }
  std::vector<int64_t> count(n_tiles), start(n_tiles);  // the same as the caller's, from the count above
  bin_in_order(depth_order(n, radii, depths), means2d, radii, tiles_x, tiles_y, tile, count.data(), start.data(),
               [ids](int64_t) { return ids; }, threads);
}

template <typename T>
void forward(const Scene<T>& s, T* out, T* out_alpha, T* final_T, int32_t* last, int threads) {
  const int64_t n_tiles = s.tiles_x * s.tiles_y, C = s.C, P = s.tile * s.tile;
  parallel_tiles(n_tiles, threads, [&](int64_t t) {
    const int64_t tx0 = (t % s.tiles_x) * s.tile, ty0 = (t / s.tiles_x) * s.tile;
    const int64_t w = std::min(s.tile, s.width - tx0), h = std::min(s.tile, s.height - ty0);
    std::vector<T> trans(P, T(1)), acc(P * C, T(0));
    std::vector<int32_t> lastk(P, -1);
    std::vector<uint8_t> done(P, 0);
    int64_t n_done = 0;
    const int64_t start = s.tile_start[t], count = s.tile_count[t];
    for (int64_t k = 0; k < count && n_done < w * h; ++k) {
      const int64_t g = s.ids[start + k];
      const Box b = pixel_box(s, g, tx0, ty0);
      const T mx = s.means2d[2 * g], my = s.means2d[2 * g + 1];
      const T ca = s.conics[3 * g], cb = s.conics[3 * g + 1], cc = s.conics[3 * g + 2];
      const T o = s.opacities[g];
      const T* f = s.feats + g * C;
      for (int64_t py = b.y0; py <= b.y1; ++py) {
        const T dy = my - (T(py) + T(0.5));
        for (int64_t px = b.x0; px <= b.x1; ++px) {
          const int64_t p = (py - ty0) * s.tile + (px - tx0);
          if (done[p]) continue;
          const T dx = mx - (T(px) + T(0.5));
          const T sigma = T(0.5) * (ca * dx * dx + cc * dy * dy) + cb * dx * dy;
          const T alpha = std::min(max_alpha<T>(), o * std::exp(-sigma));
          if (sigma < T(0) || alpha < alpha_threshold<T>()) continue;
          const T next = trans[p] * (T(1) - alpha);
          if (next <= trans_eps<T>()) { done[p] = 1; ++n_done; continue; }
          const T wgt = alpha * trans[p];
          T* a = acc.data() + p * C;
          for (int64_t ch = 0; ch < C; ++ch) a[ch] += wgt * f[ch];
          trans[p] = next;
          lastk[p] = (int32_t)k;
        }
      }
    }
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        const int64_t p = y * s.tile + x, pix = (ty0 + y) * s.width + (tx0 + x);
        std::copy(acc.data() + p * C, acc.data() + (p + 1) * C, out + pix * C);
        out_alpha[pix] = T(1) - trans[p];
        final_T[pix] = trans[p];
        last[pix] = lastk[p];
      }
  });
}

template <typename T>
void backward(const Scene<T>& s, const T* final_T, const int32_t* last, const T* g_out, const T* g_alpha,
              T* g_means2d, T* g_conics, T* g_opac, T* g_feats, int attributes_move_geometry, int threads) {
  const int64_t n_tiles = s.tiles_x * s.tiles_y, C = s.C, P = s.tile * s.tile;
  const int64_t G = attributes_move_geometry ? C : std::min<int64_t>(C, kGeometryChannels);  // enter dL/dalpha
  parallel_tiles(n_tiles, threads, [&](int64_t t) {
    const int64_t tx0 = (t % s.tiles_x) * s.tile, ty0 = (t / s.tiles_x) * s.tile;
    const int64_t w = std::min(s.tile, s.width - tx0), h = std::min(s.tile, s.height - ty0);
    std::vector<T> trans(P, T(1)), suffix(P * C, T(0)), suffix_alpha(P, T(0));
    std::vector<int32_t> lastk(P, -1);
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        const int64_t p = y * s.tile + x, pix = (ty0 + y) * s.width + (tx0 + x);
        trans[p] = final_T[pix];
        lastk[p] = last[pix];
      }
    const int64_t start = s.tile_start[t], count = s.tile_count[t];
    std::vector<T> gf(C);
    for (int64_t k = count - 1; k >= 0; --k) {
      const int64_t e = start + k, g = s.ids[e];
      const Box b = pixel_box(s, g, tx0, ty0);
      const T mx = s.means2d[2 * g], my = s.means2d[2 * g + 1];
      const T ca = s.conics[3 * g], cb = s.conics[3 * g + 1], cc = s.conics[3 * g + 2];
      const T o = s.opacities[g];
      const T* f = s.feats + g * C;
      T gmx = 0, gmy = 0, ga = 0, gb = 0, gc = 0, go = 0;
      std::fill(gf.begin(), gf.end(), T(0));
      for (int64_t py = b.y0; py <= b.y1; ++py) {
        const T dy = my - (T(py) + T(0.5));
        for (int64_t px = b.x0; px <= b.x1; ++px) {
          const int64_t p = (py - ty0) * s.tile + (px - tx0);
          if (k > lastk[p]) continue;
          const T dx = mx - (T(px) + T(0.5));
          const T sigma = T(0.5) * (ca * dx * dx + cc * dy * dy) + cb * dx * dy;
          const T vis = std::exp(-sigma);
          const T raw = o * vis;
          const T alpha = std::min(max_alpha<T>(), raw);
          if (sigma < T(0) || alpha < alpha_threshold<T>()) continue;
          const int64_t pix = (py) * s.width + px;
          const T* go_pix = g_out + pix * C;
          const T ga_pix = g_alpha[pix];
          const T one_minus = T(1) - alpha;
          const T T_before = trans[p] / one_minus;
          const T wgt = alpha * T_before;
          T* suf = suffix.data() + p * C;
          T f_dot = 0, suf_dot = 0;
          for (int64_t ch = 0; ch < C; ++ch) gf[ch] += wgt * go_pix[ch];
          for (int64_t ch = 0; ch < G; ++ch) {
            f_dot += f[ch] * go_pix[ch];
            suf_dot += suf[ch] * go_pix[ch];
            suf[ch] += wgt * f[ch];
          }
          const T dL_dalpha = T_before * (f_dot + ga_pix) - (suf_dot + suffix_alpha[p] * ga_pix) / one_minus;
          suffix_alpha[p] += wgt;
          trans[p] = T_before;
          if (raw <= max_alpha<T>()) {  // the clamp passes no gradient
            go += vis * dL_dalpha;
            const T dL_dsigma = -alpha * dL_dalpha;
            ga += T(0.5) * dx * dx * dL_dsigma;
            gc += T(0.5) * dy * dy * dL_dsigma;
            gb += dx * dy * dL_dsigma;
            gmx += (ca * dx + cb * dy) * dL_dsigma;
            gmy += (cc * dy + cb * dx) * dL_dsigma;
          }
        }
      }
      g_means2d[2 * e] = gmx;
      g_means2d[2 * e + 1] = gmy;
      g_conics[3 * e] = ga;
      g_conics[3 * e + 1] = gb;
      g_conics[3 * e + 2] = gc;
      g_opac[e] = go;
      std::copy(gf.begin(), gf.end(), g_feats + e * C);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// Vectorised float32 compositing. A tile row of 16 pixels is two segments of 8 lanes; one SIMD vector
// holds one segment. GCC/Clang vector extensions map it to the machine the library is compiled for
// (-march=native: one AVX2 / AVX-512VL register, two SSE or NEON registers), so there is no intrinsics
// code and no runtime dispatch to get wrong; the scalar templates above stay as the float64 path and as
// backend 'cpu_scalar'. 8 lanes rather than 16: a splat's box covers ~6 pixels of a tile row on average,
// so a Gaussian visits only the segments its box overlaps, and 256-bit operations run at full rate on
// every x86-64 CPU of the last decade (512-bit ones are split in two on AMD Zen 4).
// The forward runs segment by segment through the splats that reach each (accumulators in registers, each
// segment stopping when its own 8 pixels saturate); the backward runs Gaussian by Gaussian over channel-major
// (channel, slot) buffers, visiting the row segments its ellipse reaches.
constexpr int kTile = 16;                  // the vector path is only used when tile == 16
constexpr int kLanes = 8;                  // pixels per vector
constexpr int kSegs = kTile / kLanes;      // vectors per tile row
constexpr int kSlots = kTile * kSegs;      // vectors per tile (the backward's slot = row * kSegs + segment)
typedef float vf __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(kLanes * sizeof(int32_t))));

// Two-vector lane shuffles (lane i of the result: lane idx[i] of a, or of b for idx[i] >= 8). GCC 12 and Clang have
// __builtin_shufflevector; GCC 11 (Ubuntu 22.04, JetPack 6) only __builtin_shuffle with an index vector, which
// -DCLIPGS_SHUFFLE_COMPAT selects on any GCC (tests/test_kernel_portability.py builds it that way).
#if !defined(CLIPGS_SHUFFLE_COMPAT) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12))
#define SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE(a, b, ...) __builtin_shuffle(a, b, vi{__VA_ARGS__})
#endif
inline vf splat(float v) { return vf{v, v, v, v, v, v, v, v}; }  // one broadcast (vf{} + v would add 0.0 first)
inline vi splat_i(int32_t v) { return vi{v, v, v, v, v, v, v, v}; }
inline vf select(vi m, vf a, vf b) { return m ? a : b; }
inline vf vmin(vf a, vf b) { return a < b ? a : b; }
inline vi lane_index() { return vi{0, 1, 2, 3, 4, 5, 6, 7}; }
// Whether any lane is non-zero / every lane is all ones: one vptest on AVX (the compositors ask once per splat),
// elsewhere a reduction by halving (3 shuffles), not a lane-by-lane loop.
#if defined(__AVX__)
inline bool any(vi m) {
  const __m256i v = (__m256i)m;
  return !_mm256_testz_si256(v, v);
}
inline bool all_set(vi m) { return _mm256_testc_si256((__m256i)m, _mm256_set1_epi32(-1)); }
inline uint32_t lane_bits(vi m) { return (uint32_t)_mm256_movemask_ps((__m256)m); }  // bit x: lane x < 0
#else
inline bool any(vi m) {
  m |= SHUFFLE(m, m, 4, 5, 6, 7, 0, 1, 2, 3);
  m |= SHUFFLE(m, m, 2, 3, 0, 1, 2, 3, 0, 1);
  m |= SHUFFLE(m, m, 1, 0, 1, 0, 1, 0, 1, 0);
  return m[0] != 0;
}
inline bool all_set(vi m) { return !any(~m); }
inline uint32_t lane_bits(vi m) {
  uint32_t bits = 0;
  for (int x = 0; x < kLanes; ++x) bits |= uint32_t(m[x] < 0) << x;
  return bits;
}
#endif
inline float hsum(vf v) {
  v += SHUFFLE(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  v += SHUFFLE(v, v, 2, 3, 0, 1, 2, 3, 0, 1);
  v += SHUFFLE(v, v, 1, 0, 1, 0, 1, 0, 1, 0);
  return v[0];
}
// The horizontal sums of eight vectors at once, added in the same order as hsum (lanes j and j + 4, then j and
// j + 2, then j and j + 1), so each comes out bit for bit as hsum's: 21 shuffles and adds instead of 48.
inline vf hsum8(const vf* v) {
  vf s[4], t[2];
  for (int i = 0; i < 4; ++i)
    s[i] = SHUFFLE(v[2 * i], v[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11) +
           SHUFFLE(v[2 * i], v[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15);
  for (int i = 0; i < 2; ++i)
    t[i] = SHUFFLE(s[2 * i], s[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13) +
           SHUFFLE(s[2 * i], s[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15);
  return SHUFFLE(t[0], t[1], 0, 2, 4, 6, 8, 10, 12, 14) +
         SHUFFLE(t[0], t[1], 1, 3, 5, 7, 9, 11, 13, 15);
}

// An 8x8 transpose in place: lane j of v[i] goes to lane i of v[j] (unpacks within 128-bit halves, then
// 64-bit shuffles, then the halves swapped: 24 shuffles where moving the 64 floats one by one takes 128 moves).
inline void transpose8(vf* v) {
  static_assert(kLanes == 8, "an 8x8 transpose");
  vf t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = SHUFFLE(v[2 * i], v[2 * i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[2 * i + 1] = SHUFFLE(v[2 * i], v[2 * i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int h = 0; h < 2; ++h)  // rows 4h .. 4h + 3: u[4h + j] holds lanes j and j + 4 of them
    for (int j = 0; j < 2; ++j) {
      u[4 * h + 2 * j] = SHUFFLE(t[4 * h + j], t[4 * h + 2 + j], 0, 1, 8, 9, 4, 5, 12, 13);
      u[4 * h + 2 * j + 1] = SHUFFLE(t[4 * h + j], t[4 * h + 2 + j], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  for (int j = 0; j < 4; ++j) {
    v[j] = SHUFFLE(u[j], u[4 + j], 0, 1, 2, 3, 8, 9, 10, 11);
    v[4 + j] = SHUFFLE(u[j], u[4 + j], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// 2^y for float32 lanes, y <= 0 (clamped below at -126). The compositor takes alpha = o * exp(-sigma) as
// o * 2^y with y = -sigma log2(e), the log2(e) folded into the splat's conic coefficients once per tile
// (exp2_coefficients), so the lanes skip exp's range reduction by ln 2 (a multiply and two multiply-adds):
// y = n + f with n the nearest integer (read off the float that rounded it, no conversion) and |f| <= 1/2, 2^f by
// a degree-4 polynomial fitted for relative error on that interval (2.6e-6 in exact arithmetic; the degree-5 one
// of 7.7e-8 cost 1.4 % more render time for accuracy no image needs: alphas below 1/255 are dropped and the
// float32 sums carry 1e-6), 2^n built in the exponent bits. Relative error vs exp2 <= 3e-6 over [-126, 0]
// (checked by tests/test_render_cpu.py through clipgs_fast_exp2_f32); the folded coefficients add a few float32
// roundings of y (2e-7 relative at the alpha threshold's y = -8). Lanes with y > 0 (none that pass the
// compositor's tests) are not clamped.
inline vf fast_exp2(vf y) {
  y = y < splat(-126.f) ? splat(-126.f) : y;
  const vf magic = splat(12582912.f);  // 1.5 * 2^23: adding it rounds to the nearest integer, in the low bits
  const vf t = y + magic;
  const vf f = y - (t - magic);
  vf p = splat(0.00957009492f);
  p = p * f + splat(0.0559178598f);
  p = p * f + splat(0.24024745f);
  p = p * f + splat(0.693121815f);
  p = p * f + splat(0.999999261f);
  vi t_bits;
  __builtin_memcpy(&t_bits, &t, sizeof t_bits);
  const vi bits = (t_bits - splat_i(0x4B400000 - 127)) << 23;  // (n + 127) << 23: 0x4B400000 is magic's bits
  vf scale;
  __builtin_memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// A splat's exponent y = e_a dx^2 + e_b dx dy + e_c dy^2 = -sigma log2(e) (see fast_exp2): the forward and the
// backward take their coefficients from here, so their alphas agree bit for bit.
struct Exp2Coefficients { float e_a, e_b, e_c; };
inline Exp2Coefficients exp2_coefficients(float ca, float cb, float cc) {
  constexpr float kHalfLog2e = 0.72134752044448170f, kLog2e = 1.44269504088896341f;
  return Exp2Coefficients{-kHalfLog2e * ca, -kLog2e * cb, -kHalfLog2e * cc};
}

// Per-lane std:: functions: the scalar results exactly (sqrt and ceil compile to vector instructions; exp and
// log stay library calls, a vector approximation would move radii across their integer ceilings).
template <typename F>
inline vf lanes_apply(vf x, F f) {
  vf r;
  for (int j = 0; j < kLanes; ++j) r[j] = f(x[j]);
  return r;
}
inline vf vsqrt(vf x) { return lanes_apply(x, [](float v) { return std::sqrt(v); }); }
inline vf vceil(vf x) { return lanes_apply(x, [](float v) { return std::ceil(v); }); }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }

// `ewa` for eight Gaussians per vector, in depth (tz = the camera-frame z): the same expressions in the same order.
// m / q / ls: means, quaternions and log-scales, one vector per component (lanes = Gaussians).
struct EwaLanes {
  vf tz, qn, w, x, y, z;  // quaternion norm and normalised components
  vf R[9], sc[3], Mc[9];
  vf cux, cuy;
  vi free_x, free_y;
  vf J[6], JM[6];
  vf a, b, c;
};

// Always inlined: called, the compiler fused multiply-adds differently across the call and the projection's conics
// moved by a rounding (renders of the 200k benchmark map changed by up to 2e-3); inlined, the same as before.
__attribute__((always_inline)) inline EwaLanes ewa_lanes(const vf* mc, const vf* q, const vf* ls,
                                                         const Lens<float>& L, float eps2d) {
  EwaLanes e;
  const float* vm = L.vm;
  const vf tz = e.tz = mc[2];
  const vf qn = e.qn = vsqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
  const vf w = e.w = q[0] / qn, x = e.x = q[1] / qn, y = e.y = q[2] / qn, zq = e.z = q[3] / qn;
  const vf one = splat(1.f), two = splat(2.f);
  const vf R[9] = {one - two * (y * y + zq * zq), two * (x * y - w * zq), two * (x * zq + w * y),
                   two * (x * y + w * zq), one - two * (x * x + zq * zq), two * (y * zq - w * x),
                   two * (x * zq - w * y), two * (y * zq + w * x), one - two * (x * x + y * y)};
  std::copy(R, R + 9, e.R);
  for (int k = 0; k < 3; ++k) e.sc[k] = lanes_apply(ls[k], [](float v) { return std::exp(v); });
  vf M[9];
  for (int r = 0; r < 3; ++r)
    for (int k = 0; k < 3; ++k) M[3 * r + k] = R[3 * r + k] * e.sc[k];
  for (int r = 0; r < 3; ++r)
    for (int k = 0; k < 3; ++k)
      e.Mc[3 * r + k] = splat(vm[4 * r]) * M[k] + splat(vm[4 * r + 1]) * M[3 + k] + splat(vm[4 * r + 2]) * M[6 + k];
  const vf ux = mc[0] / tz, uy = mc[1] / tz;
  e.free_x = (ux >= splat(-L.lim_x_neg)) & (ux <= splat(L.lim_x_pos));
  e.free_y = (uy >= splat(-L.lim_y_neg)) & (uy <= splat(L.lim_y_pos));
  const vf cux = e.cux = vmin(vmax(ux, splat(-L.lim_x_neg)), splat(L.lim_x_pos));
  const vf cuy = e.cuy = vmin(vmax(uy, splat(-L.lim_y_neg)), splat(L.lim_y_pos));
  const vf txc = tz * cux, tyc = tz * cuy;
  const vf zero{};
  const vf J[6] = {splat(L.fx) / tz, zero, -splat(L.fx) * txc / (tz * tz), zero, splat(L.fy) / tz,
                   -splat(L.fy) * tyc / (tz * tz)};
  std::copy(J, J + 6, e.J);
  vf* JM = e.JM;
  for (int r = 0; r < 2; ++r)
    for (int k = 0; k < 3; ++k)
      JM[3 * r + k] = J[3 * r] * e.Mc[k] + J[3 * r + 1] * e.Mc[3 + k] + J[3 * r + 2] * e.Mc[6 + k];
  e.a = JM[0] * JM[0] + JM[1] * JM[1] + JM[2] * JM[2] + splat(eps2d);
  e.b = JM[0] * JM[3] + JM[1] * JM[4] + JM[2] * JM[5];
  e.c = JM[3] * JM[3] + JM[4] * JM[4] + JM[5] * JM[5] + splat(eps2d);
  return e;
}

// `project` for float32, eight Gaussians per vector: the same expressions in the same order as the scalar
// template (Cull::maybe, ewa, the radius and the box test), so the same values but for the compiler's choice of
// fused multiply-adds; blocks whose eight Gaussians the cheap cull drops skip the rest.
void project_simd(int64_t n, const float* means, const float* quats, const float* log_scales,
                  const float* opacities, const float* viewmat, const float* K, int64_t width, int64_t height,
                  float near_plane, float far_plane, float eps2d, float* means2d, float* conics, float* depths,
                  int32_t* radii, int threads) {
  const Cull<float> cu(viewmat, K, width, height, near_plane, far_plane, eps2d);
  const Lens<float> L(viewmat, K, width, height);
  const float* vm = L.vm;
  const float W = float(width), H = float(height), thr = alpha_threshold<float>();
  const int64_t chunk = 4096;
  parallel_tiles((n + chunk - 1) / chunk, threads, [&](int64_t c) {
    const int64_t end = std::min(n, (c + 1) * chunk);
    for (int64_t i0 = c * chunk; i0 < end; i0 += kLanes) {
      const int nl = (int)std::min<int64_t>(kLanes, end - i0);
      vf m[3], q[4], ls[3], o;
      for (int j = 0; j < kLanes; ++j) {  // lanes past the end repeat the last Gaussian; never written
        const int64_t i = i0 + std::min(j, nl - 1);
        for (int k = 0; k < 3; ++k) m[k][j] = means[3 * i + k], ls[k][j] = log_scales[3 * i + k];
        for (int k = 0; k < 4; ++k) q[k][j] = quats[4 * i + k];
        o[j] = opacities[i];
      }
      vf mc[3];
      for (int r = 0; r < 3; ++r)
        mc[r] = splat(vm[4 * r]) * m[0] + splat(vm[4 * r + 1]) * m[1] + splat(vm[4 * r + 2]) * m[2] +
                splat(vm[4 * r + 3]);
      const vf z = mc[2];
      for (int j = 0; j < nl; ++j) {
        const int64_t i = i0 + j;
        depths[i] = z[j];
        radii[2 * i] = radii[2 * i + 1] = 0;
        means2d[2 * i] = means2d[2 * i + 1] = 0;
        conics[3 * i] = conics[3 * i + 1] = conics[3 * i + 2] = 0;
      }
      // Cull::maybe
      vi keep = (z > splat(near_plane)) & (z < splat(far_plane)) & (o >= splat(thr));
      if (!any(keep)) continue;
      const vf s_max = lanes_apply(vmax(ls[0], vmax(ls[1], ls[2])), [](float v) { return std::exp(v); });
      const vf cmx = splat(cu.fx) * mc[0] / z + splat(cu.cx), cmy = splat(cu.fy) * mc[1] / z + splat(cu.cy);
      const vf reach_x = splat(3.33f) * vsqrt(splat(cu.fx * cu.fx) / (z * z) * splat(1.f + cu.lim_x * cu.lim_x) *
                                              s_max * s_max + splat(eps2d)) + splat(1.f);
      const vf reach_y = splat(3.33f) * vsqrt(splat(cu.fy * cu.fy) / (z * z) * splat(1.f + cu.lim_y * cu.lim_y) *
                                              s_max * s_max + splat(eps2d)) + splat(1.f);
      keep &= (cmx + reach_x > splat(0.f)) & (cmx - reach_x < splat(W)) & (cmy + reach_y > splat(0.f)) &
              (cmy - reach_y < splat(H));
      if (!any(keep)) continue;
      // ewa (culled lanes: in depth by the cull, so tz = z)
      const EwaLanes e = ewa_lanes(mc, q, ls, L, eps2d);
      const vf tz = z, a = e.a, b = e.b, cc = e.c;
      // the projection's own tests, the radius and the box
      const vf det = a * cc - b * b;
      keep &= det > splat(0.f);
      const vf mx = splat(L.fx) * mc[0] / tz + splat(L.cx), my = splat(L.fy) * mc[1] / tz + splat(L.cy);
      vf extent;
      for (int j = 0; j < kLanes; ++j)
        extent[j] = keep[j] ? std::min(std::sqrt(2.f * std::log(o[j] / thr)), 3.33f) : 0.f;
      const vf rx = vceil(extent * vsqrt(a)), ry = vceil(extent * vsqrt(cc));
      keep &= (rx > splat(0.f)) | (ry > splat(0.f));
      keep &= (mx + rx > splat(0.f)) & (mx - rx < splat(W)) & (my + ry > splat(0.f)) & (my - ry < splat(H));
      const vf ca = cc / det, cb = -b / det, c2 = a / det;
      for (int j = 0; j < nl; ++j) {
        if (!keep[j]) continue;
        const int64_t i = i0 + j;
        means2d[2 * i] = mx[j];
        means2d[2 * i + 1] = my[j];
        conics[3 * i] = ca[j];
        conics[3 * i + 1] = cb[j];
        conics[3 * i + 2] = c2[j];
        radii[2 * i] = (int32_t)rx[j];
        radii[2 * i + 1] = (int32_t)ry[j];
      }
    }
  });
}

// `project_backward` for float32, eight Gaussians per vector: the scalar template's expressions in its order (the
// clamp's branches as selects), reading the intermediates from ewa_lanes. Lanes with no footprint get zeros.
void project_backward_simd(int64_t n, const float* means, const float* quats, const float* log_scales,
                           const float* viewmat, const float* K, int64_t width, int64_t height, float eps2d,
                           const int32_t* radii, const float* g_means2d, const float* g_conics, const float* g_depths,
                           float* g_means, float* g_quats, float* g_log_scales, int threads) {
  const Lens<float> L(viewmat, K, width, height);
  const float* vm = L.vm;
  const int64_t chunk = 4096;
  parallel_tiles((n + chunk - 1) / chunk, threads, [&](int64_t c) {
    const int64_t end = std::min(n, (c + 1) * chunk);
    for (int64_t i0 = c * chunk; i0 < end; i0 += kLanes) {
      const int nl = (int)std::min<int64_t>(kLanes, end - i0);
      vi seen{};
      for (int j = 0; j < nl; ++j) seen[j] = radii[2 * (i0 + j)] > 0 || radii[2 * (i0 + j) + 1] > 0 ? -1 : 0;
      if (!any(seen)) {
        std::fill(g_means + 3 * i0, g_means + 3 * (i0 + nl), 0.f);
        std::fill(g_quats + 4 * i0, g_quats + 4 * (i0 + nl), 0.f);
        std::fill(g_log_scales + 3 * i0, g_log_scales + 3 * (i0 + nl), 0.f);
        continue;
      }
      vf m[3], q[4], ls[3], gA, gB, gC, g_dep, gmx, gmy;
      for (int j = 0; j < kLanes; ++j) {  // lanes past the end repeat the last Gaussian; never written
        const int64_t i = i0 + std::min(j, nl - 1);
        for (int k = 0; k < 3; ++k) m[k][j] = means[3 * i + k], ls[k][j] = log_scales[3 * i + k];
        for (int k = 0; k < 4; ++k) q[k][j] = quats[4 * i + k];
        gA[j] = g_conics[3 * i], gB[j] = g_conics[3 * i + 1], gC[j] = g_conics[3 * i + 2];
        g_dep[j] = g_depths[i], gmx[j] = g_means2d[2 * i], gmy[j] = g_means2d[2 * i + 1];
      }
      vf mc[3];
      for (int r = 0; r < 3; ++r)
        mc[r] = splat(vm[4 * r]) * m[0] + splat(vm[4 * r + 1]) * m[1] + splat(vm[4 * r + 2]) * m[2] +
                splat(vm[4 * r + 3]);
      const EwaLanes e = ewa_lanes(mc, q, ls, L, eps2d);  // a footprint means in depth: tz = z
      const vf *R = e.R, *sc = e.sc, *Mc = e.Mc, *J = e.J, *JM = e.JM;
      const vf tz = e.tz, tz2 = tz * tz, txc = tz * e.cux, tyc = tz * e.cuy, a = e.a, b = e.b, cc = e.c;
      const vf w = e.w, x = e.x, y = e.y, z = e.z, two = splat(2.f), one = splat(1.f), zero{};
      const vf fx = splat(K[0]), fy = splat(K[4]);
      const vf det = a * cc - b * b, det2 = det * det;
      const vf ga = gA * (-cc * cc / det2) + gB * (b * cc / det2) + gC * (one / det - a * cc / det2);
      const vf gb = gA * (two * b * cc / det2) + gB * (-(det + two * b * b) / det2) + gC * (two * a * b / det2);
      const vf gc = gA * (one / det - a * cc / det2) + gB * (a * b / det2) + gC * (-a * a / det2);
      vf gJM[6], gJ[6], gMc[9];
      for (int k = 0; k < 3; ++k) {
        gJM[k] = two * ga * JM[k] + gb * JM[3 + k];
        gJM[3 + k] = two * gc * JM[3 + k] + gb * JM[k];
      }
      for (int r = 0; r < 2; ++r)
        for (int k = 0; k < 3; ++k)
          gJ[3 * r + k] = gJM[3 * r] * Mc[3 * k] + gJM[3 * r + 1] * Mc[3 * k + 1] + gJM[3 * r + 2] * Mc[3 * k + 2];
      for (int r = 0; r < 3; ++r)
        for (int k = 0; k < 3; ++k) gMc[3 * r + k] = J[r] * gJM[k] + J[3 + r] * gJM[3 + k];
      vf gmc[3] = {zero, zero, g_dep};
      gmc[2] += gJ[0] * (-fx / tz2) + gJ[2] * (two * fx * txc / (tz2 * tz)) + gJ[4] * (-fy / tz2) +
                gJ[5] * (two * fy * tyc / (tz2 * tz));
      const vf g_txc = gJ[2] * (-fx / tz2), g_tyc = gJ[5] * (-fy / tz2);
      gmc[0] += select(e.free_x, g_txc, zero);
      gmc[2] += select(e.free_x, zero, g_txc * e.cux);
      gmc[1] += select(e.free_y, g_tyc, zero);
      gmc[2] += select(e.free_y, zero, g_tyc * e.cuy);
      gmc[0] += gmx * fx / tz;
      gmc[1] += gmy * fy / tz;
      gmc[2] += -gmx * fx * mc[0] / tz2 - gmy * fy * mc[1] / tz2;
      vf out_means[3], out_scales[3], out_quats[4];
      for (int k = 0; k < 3; ++k)  // mc = Rv m + t
        out_means[k] = splat(vm[k]) * gmc[0] + splat(vm[4 + k]) * gmc[1] + splat(vm[8 + k]) * gmc[2];
      vf gM[9], gR[9];  // Mc = Rv M
      for (int r = 0; r < 3; ++r)
        for (int k = 0; k < 3; ++k)
          gM[3 * r + k] = splat(vm[r]) * gMc[k] + splat(vm[4 + r]) * gMc[3 + k] + splat(vm[8 + r]) * gMc[6 + k];
      for (int k = 0; k < 3; ++k) {
        vf gs = zero;
        for (int r = 0; r < 3; ++r) {
          gR[3 * r + k] = gM[3 * r + k] * sc[k];
          gs += gM[3 * r + k] * R[3 * r + k];
        }
        out_scales[k] = gs * sc[k];
      }
      const vf gw = two * (-z * gR[1] + y * gR[2] + z * gR[3] - x * gR[5] - y * gR[6] + x * gR[7]);
      const vf gx = two * (y * gR[1] + z * gR[2] + y * gR[3] - two * x * gR[4] - w * gR[5] + z * gR[6] + w * gR[7] -
                           two * x * gR[8]);
      const vf gy = two * (-two * y * gR[0] + x * gR[1] + w * gR[2] + x * gR[3] + z * gR[5] - w * gR[6] +
                           z * gR[7] - two * y * gR[8]);
      const vf gz = two * (-two * z * gR[0] - w * gR[1] + x * gR[2] + w * gR[3] - two * z * gR[4] + y * gR[5] +
                           x * gR[6] + y * gR[7]);
      const vf dot = w * gw + x * gx + y * gy + z * gz;  // through the normalisation q / |q|
      out_quats[0] = (gw - w * dot) / e.qn, out_quats[1] = (gx - x * dot) / e.qn;
      out_quats[2] = (gy - y * dot) / e.qn, out_quats[3] = (gz - z * dot) / e.qn;
      for (int j = 0; j < nl; ++j) {
        const int64_t i = i0 + j;
        const bool keep = seen[j] != 0;
        for (int k = 0; k < 3; ++k) g_means[3 * i + k] = keep ? out_means[k][j] : 0.f;
        for (int k = 0; k < 3; ++k) g_log_scales[3 * i + k] = keep ? out_scales[k][j] : 0.f;
        for (int k = 0; k < 4; ++k) g_quats[4 * i + k] = keep ? out_quats[k][j] : 0.f;
      }
    }
  });
}

// The projection the exported entry points run: eight lanes at a time for float32, the scalar template for float64.
template <typename T>
void project_fastest(int64_t n, const T* means, const T* quats, const T* log_scales, const T* opacities,
                     const T* viewmat, const T* K, int64_t width, int64_t height, T near_plane, T far_plane, T eps2d,
                     T* means2d, T* conics, T* depths, int32_t* radii, int threads) {
  if constexpr (std::is_same<T, float>::value)
    project_simd(n, means, quats, log_scales, opacities, viewmat, K, width, height, near_plane, far_plane, eps2d,
                 means2d, conics, depths, radii, threads);
  else
    project(n, means, quats, log_scales, opacities, viewmat, K, width, height, near_plane, far_plane, eps2d,
            means2d, conics, depths, radii, threads);
}

// Its gradient: eight lanes at a time for float32, the scalar template for float64.
template <typename T>
void project_backward_fastest(int64_t n, const T* means, const T* quats, const T* log_scales, const T* viewmat,
                              const T* K, int64_t width, int64_t height, T eps2d, const int32_t* radii,
                              const T* g_means2d, const T* g_conics, const T* g_depths, T* g_means, T* g_quats,
                              T* g_log_scales, int threads) {
  if constexpr (std::is_same<T, float>::value)
    project_backward_simd(n, means, quats, log_scales, viewmat, K, width, height, eps2d, radii, g_means2d, g_conics,
                          g_depths, g_means, g_quats, g_log_scales, threads);
  else
    project_backward(n, means, quats, log_scales, viewmat, K, width, height, eps2d, radii, g_means2d, g_conics,
                     g_depths, g_means, g_quats, g_log_scales, threads);
}

// The row segments a Gaussian's box overlaps in a tile: lanes inside [x0, x1] and the x offsets of
// their pixel centres (mx - (px + 0.5)), for segments seg0..seg1.
struct Segments {
  int seg0 = 0, seg1 = -1;
  vi cols[kSegs];
  vf dx[kSegs];
};

inline Segments segments(const Box& b, int64_t tx0, float mx) {
  Segments sg;
  if (b.x0 > b.x1 || b.y0 > b.y1) return sg;
  const int x0 = (int)(b.x0 - tx0), x1 = (int)(b.x1 - tx0);
  sg.seg0 = x0 / kLanes, sg.seg1 = x1 / kLanes;
  for (int q = sg.seg0; q <= sg.seg1; ++q) {
    const vi col = lane_index() + q * kLanes;
    sg.cols[q] = (col >= splat_i(x0)) & (col <= splat_i(x1));
    sg.dx[q] = splat(mx - float(tx0) - 0.5f) - __builtin_convertvector(col, vf);
  }
  return sg;
}

// Channels [0, kHead) are always composited; the rest (the attribute channels: the caller lays depth and
// colour first) only in the 8-pixel row segments that need them: in the forward, segments holding a pixel
// flagged in `need` (null: all; elsewhere they come out 0), in the backward, segments whose output gradient
// there is not all zero (the rest add exactly zero). A semantic loss on a few thousand sampled pixels leaves
// most segments out of that work at 320x240 and above.
constexpr int kHead = 4;

// The always-composited channel count for a kernel compiled for kC channels (compile-time when kC > 0).
template <int kC>
inline int64_t head_channels(int64_t C) {
  if constexpr (kC > 0) return kC < kHead ? kC : kHead;
  return std::min<int64_t>(C, kHead);
}

// One Gaussian's constants for compositing one tile, gathered once per tile (list order = depth order).
struct TileSplat {
  float mx_off;          // mx - tx0 - 0.5: a lane's dx is mx_off minus its column
  float my, o;
  Exp2Coefficients ex;   // its alpha's exponent (exp2_coefficients)
  int32_t x0, x1;        // tile-local inclusive columns of its box
  int32_t y0, y1;        // tile-local inclusive rows of its box
  int32_t k;             // its index in the tile's list (what `last` records)
  const float* f;        // its C channels
};

// Per tile: the splats whose ellipse reaches one of its pixels, and for each 8-pixel row segment (list slot
// `list_slot(row, segment)`) the splats that reach it, in list order: rows[row_start[q] .. row_end[q]). Reused
// across tiles by each thread.
static_assert(kSlots <= 32, "a splat's reached segments are one 32-bit mask");
constexpr int list_slot(int row, int seg) { return seg * kTile + row; }
struct TileLists {
  std::vector<TileSplat> splats;
  std::vector<int32_t> rows;
  std::vector<uint32_t> reached;  // per splat: the segments it reaches, bit list_slot(row, segment)
  int32_t row_start[kSlots + 1];  // per slot: its stretch of `rows`
  int32_t row_end[kSlots];        // per slot: the end of its entries
  std::vector<vf> weights;        // composite_segment's scratch: one per entry of the longest slot
  std::vector<const float*> weight_feats;  // and the features each weight multiplies
};

// Which 8-pixel segments of tile rows r0 .. r0 + 7 (one lane per row; bit q: segment q) hold a pixel centre where a
// splat's alpha can reach the threshold: within its box (tile-local columns x0..x1, rows y0..y1) and where
// sigma = ca/2 dx^2 + cb dx dy + cc/2 dy^2 <= log(o / threshold), an interval of dx per row (none past the
// ellipse's top and bottom). The box bounds the ellipse on every row at once; rows near its top and bottom, and
// tilted ellipses, reach fewer segments (a quarter fewer segment evaluations on the render benchmark's scenes).
// The bound is taken from above (log_upper + 1e-3, then 1e-3 px), so a segment left out holds only lanes the
// compositor would mask out: the same image and gradients bit for bit. mx_off = mx - tx0 - 0.5, my_off = my -
// ty0 - 0.5.
struct Reach {
  vf k_dy2, k_0, slope, r_scale, mx;
  float my_off;
  int32_t x0, x1, y0, y1;
  Reach(float mx_off, float my_off_, const ReachShape& sh, int32_t x0_, int32_t x1_, int32_t y0_, int32_t y1_)
      : k_dy2(splat(sh.k_dy2)), k_0(splat(sh.k_0)), slope(splat(sh.slope)), r_scale(splat(sh.r_scale)),
        mx(splat(mx_off)), my_off(my_off_), x0(x0_), x1(x1_), y0(y0_), y1(y1_) {}
  Reach(float mx_off, float my_off_, float ca, float cb, float cc, float o, int32_t x0_, int32_t x1_, int32_t y0_,
        int32_t y1_)
      : Reach(mx_off, my_off_, reach_shape(ca, cb, cc, o), x0_, x1_, y0_, y1_) {}
  vi rows(int r0) const {
    constexpr float eps = 1e-3f;
    const vi row = lane_index() + r0;
    const vf dy = splat(my_off) - __builtin_convertvector(row, vf);
    const vf disc = k_dy2 * dy * dy + k_0;
    const vf root = vsqrt(vmax(disc, splat(0.f))) * r_scale;
    // columns c with dx = mx_off - c in [(-cb dy - root) / ca, (-cb dy + root) / ca]
    const vf c_lo = mx + slope * dy - root - splat(eps), c_hi = mx + slope * dy + root + splat(eps);
    vi segs = splat_i(0);
    for (int q = 0; q < kSegs; ++q) {
      const float first = float(std::max(x0, q * kLanes)), last = float(std::min(x1, q * kLanes + kLanes - 1));
      if (first <= last) segs |= (c_lo <= splat(last)) & (c_hi >= splat(first)) & splat_i(1 << q);
    }
    return segs & ((disc >= splat(0.f)) & (row >= splat_i(y0)) & (row <= splat_i(y1)));
  }
};

// The segments the splat reaches (bit list_slot(row, segment)), added to the per-slot counts (slot_counts[i] lane
// x: slot i * kLanes + x).
inline uint32_t reached_segments(const TileSplat& sp, const ReachShape& shape, int64_t ty0, vi* slot_counts) {
  const Reach reach(sp.mx_off, sp.my - float(ty0) - 0.5f, shape, sp.x0, sp.x1, sp.y0, sp.y1);
  static_assert(list_slot(kLanes, 0) == kLanes && list_slot(0, 1) == kTile, "lanes of one vector: rows of a segment");
  uint32_t bits = 0;
  for (int r0 = 0; r0 < kTile; r0 += kLanes) {
    if (r0 > sp.y1 || r0 + kLanes <= sp.y0) continue;  // the fill reads rows y0..y1 only
    const vi segs = reach.rows(r0);
    for (int q = 0; q < kSegs; ++q) {  // a true lane is -1
      const vi hit = (segs & splat_i(1 << q)) != splat_i(0);
      slot_counts[list_slot(r0, q) / kLanes] -= hit;
      bits |= lane_bits(hit) << list_slot(r0, q);
    }
  }
  return bits;
}

template <bool kRecords>
inline void gather_tile(const Scene<float>& s, int64_t t, int64_t tx0, int64_t ty0, TileLists& L) {
  const int64_t start = s.tile_start[t], count = s.tile_count[t], C = s.C;
  L.splats.clear();
  L.reached.resize(count);
  vi slot_counts[kSlots / kLanes] = {};  // splats per list slot (lane x of vector i: slot i * kLanes + x)
  constexpr int64_t kAhead = 8;  // the lists' Gaussians lie scattered through the map: fetch ahead
  for (int64_t k = 0; k < count; ++k) {
    if (k + kAhead < count) {
      const int64_t ga = s.ids[start + k + kAhead];
      if constexpr (kRecords) {
        __builtin_prefetch(s.records + ga);
      } else {
        __builtin_prefetch(s.means2d + 2 * ga), __builtin_prefetch(s.conics + 3 * ga);
        __builtin_prefetch(s.radii + 2 * ga), __builtin_prefetch(s.opacities + ga);
      }
      __builtin_prefetch(s.feats + ga * C), __builtin_prefetch(s.feats + ga * C + C - 1);
    }
    const int64_t g = s.ids[start + k];
    SplatRecord rec;
    if constexpr (kRecords)
      rec = s.records[g];
    else
      rec = SplatRecord{s.means2d[2 * g], s.means2d[2 * g + 1], s.conics[3 * g], s.conics[3 * g + 1],
                        s.conics[3 * g + 2], s.opacities[g], s.radii[2 * g], s.radii[2 * g + 1], {}};
    const Box b = pixel_box(s, rec.mx, rec.my, float(rec.rx), float(rec.ry), tx0, ty0);
    if (b.x0 > b.x1 || b.y0 > b.y1) continue;
    if constexpr (!kRecords) rec.shape = reach_shape(rec.ca, rec.cb, rec.cc, rec.o);
    TileSplat sp;
    sp.mx_off = rec.mx - float(tx0) - 0.5f;
    sp.my = rec.my;
    sp.ex = exp2_coefficients(rec.ca, rec.cb, rec.cc);
    sp.o = rec.o;
    sp.x0 = (int32_t)(b.x0 - tx0), sp.x1 = (int32_t)(b.x1 - tx0);
    sp.y0 = (int32_t)(b.y0 - ty0), sp.y1 = (int32_t)(b.y1 - ty0);
    sp.k = (int32_t)k;
    const uint32_t reached = reached_segments(sp, rec.shape, ty0, slot_counts);
    if (reached == 0) continue;
    sp.f = s.feats + g * C;
    L.reached[L.splats.size()] = reached;
    L.splats.push_back(sp);
  }
  L.row_start[0] = 0;
  for (int q = 0; q < kSlots; ++q) L.row_start[q + 1] = L.row_start[q] + slot_counts[q / kLanes][q % kLanes];
  L.rows.resize(L.row_start[kSlots]);
  int32_t cursor[kSlots];
  std::copy(L.row_start, L.row_start + kSlots, cursor);
  for (int32_t i = 0; i < (int32_t)L.splats.size(); ++i)  // each splat into the lists of the segments it reaches
    for (uint32_t bits = L.reached[i]; bits != 0; bits &= bits - 1) L.rows[cursor[__builtin_ctz(bits)]++] = i;
  int32_t longest = 0;
  for (int q = 0; q < kSlots; ++q) L.row_end[q] = cursor[q], longest = std::max(longest, cursor[q] - L.row_start[q]);
  if ((int32_t)L.weights.size() < longest) L.weights.resize(longest), L.weight_feats.resize(longest);
}

// A segment's channel sums (acc[ch], lane x: pixel x) into n_lanes consecutive pixels of the (H, W, C) image at
// out, eight channels at a time through a transpose (the pixel-by-pixel copy had been 8 % of compositing).
inline void store_pixels(const vf* acc, int64_t C, int n_lanes, float* out) {
  for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
    const int64_t width = std::min<int64_t>(kLanes, C - c0);
    vf block[kLanes];
    for (int i = 0; i < kLanes; ++i) block[i] = i < width ? acc[c0 + i] : vf{};
    transpose8(block);
    for (int x = 0; x < n_lanes; ++x) {
      float* dst = out + x * C + c0;
      if (width == kLanes)
        __builtin_memcpy(dst, &block[x], sizeof(vf));
      else if (width == kLanes / 2)
        __builtin_memcpy(dst, &block[x], sizeof(vf) / 2);
      else
        for (int64_t i = 0; i < width; ++i) dst[i] = block[x][i];
    }
  }
}

// Composite one 8-pixel row segment (tile row `row`, segment `seg`) through the splats reaching it, accumulators in
// registers; stops as soon as every lane is saturated. Channels [0, head) always, the rest when `tail` (the others
// come out 0); the sums go to the n_lanes pixels of the (H, W, C) image at out.
template <int kC, bool kTail, bool kTrack = true>
inline void composite_segment(TileLists& L, int row, int seg, int64_t ty0, int64_t C, int64_t head,
                              vi done, float* out, int n_lanes, vf& trans_out, vi& last_out) {
  // Compile-time channel bounds where kC > 0, so the loops unroll and the accumulators stay in registers.
  constexpr int kHeadC = kC > 0 ? (kC < kHead ? kC : kHead) : 0;
  const int64_t n_ch = kC > 0 ? kC : C, n_head = kC > 0 ? kHeadC : head;
  // Two passes: the weights first (exp, alpha, the lane tests, the transmittance), into w, then the channels. The
  // same sums in the same order as one loop doing both, 13-15 % faster on the render benchmark's 200k-Gaussian
  // 640x480 map (each splat's channel multiply-adds no longer wait in line behind its weight).
  const int32_t* it = L.rows.data() + L.row_start[list_slot(row, seg)];
  const int32_t* end = L.rows.data() + L.row_end[list_slot(row, seg)];
  vf* w = L.weights.data();
  const float** wf = L.weight_feats.data();
  vf trans = splat(1.f);
  vi lastk = splat_i(-1);
  const vi col = lane_index() + seg * kLanes;
  const vf colf = __builtin_convertvector(col, vf);
  const float dy_base = float(ty0 + row) + 0.5f;
  const int32_t* const first = it;
  for (; it != end; ++it) {
    const TileSplat& sp = L.splats[*it];
    const float dy = sp.my - dy_base;
    const vf dx = splat(sp.mx_off) - colf;
    const vf y = (splat(sp.ex.e_a) * dx + splat(sp.ex.e_b * dy)) * dx + splat(sp.ex.e_c * dy * dy);  // -sigma log2 e
    const vf alpha = vmin(splat(max_alpha<float>()), splat(sp.o) * fast_exp2(y));
    const vi inside = (col >= splat_i(sp.x0)) & (col <= splat_i(sp.x1));
    const vi valid = inside & ~done & (y <= splat(0.f)) & (alpha >= splat(alpha_threshold<float>()));
    // No branch on `valid`: lanes outside it add exactly zero, and a data-dependent branch mispredicts often.
    const vf w_lane = alpha * trans, next = trans - w_lane;
    const vi stop = valid & (next <= splat(trans_eps<float>()));
    const vi take = valid & ~stop;
    done |= stop;
    w[it - first] = select(take, w_lane, splat(0.f));
    wf[it - first] = sp.f;
    trans = select(take, next, trans);
    if constexpr (kTrack) lastk = take ? splat_i(sp.k) : lastk;  // what the backward needs, nothing else
    if (all_set(done)) {  // every lane saturated: nothing behind can contribute
      ++it;
      break;
    }
  }
  const int64_t n_taken = it - first;
  vf acc_fixed[kC > 0 ? kC : 1];
  std::vector<vf> acc_dyn(kC > 0 ? 0 : C);
  vf* acc = acc_fixed;
  if constexpr (kC == 0) acc = acc_dyn.data();
  for (int64_t ch = 0; ch < n_ch; ++ch) acc[ch] = vf{};
  for (int64_t j = 0; j < n_taken; ++j) {
    const vf wgt = w[j];
    const float* f = wf[j];
    if constexpr (kC > 0) {
      for (int ch = 0; ch < kHeadC; ++ch) acc_fixed[ch] += wgt * splat(f[ch]);
      if constexpr (kTail)
        for (int ch = kHeadC; ch < kC; ++ch) acc_fixed[ch] += wgt * splat(f[ch]);
    } else {
      for (int64_t ch = 0; ch < n_head; ++ch) acc[ch] += wgt * splat(f[ch]);
      if constexpr (kTail)
        for (int64_t ch = n_head; ch < n_ch; ++ch) acc[ch] += wgt * splat(f[ch]);
    }
  }
  store_pixels(acc, n_ch, n_lanes, out);
  trans_out = trans;
  last_out = lastk;
}

// Segment-major: each 8-pixel row segment of a tile runs through the splats of its row alone (lists built
// once per tile), its accumulators in registers, and stops when its own 8 pixels are saturated (rather than
// when the whole tile is). kC > 0: channel count known at compile time (the loops unroll); kC == 0: runtime.
template <int kC>
void forward_simd(const Scene<float>& s, const uint8_t* need, float* out, float* out_alpha, float* final_T,
                  int32_t* last, int threads) {
  const int64_t n_tiles = s.tiles_x * s.tiles_y, C = kC > 0 ? kC : s.C;
  const int64_t head = head_channels<kC>(C);
  const bool track = final_T != nullptr;  // null final_T and last: no backward follows, `last` is not kept
  parallel_tiles(n_tiles, threads, [&](int64_t t) {
    static thread_local TileLists L;
    const int64_t tx0 = (t % s.tiles_x) * kTile, ty0 = (t / s.tiles_x) * kTile;
    const int64_t w = std::min<int64_t>(kTile, s.width - tx0), h = std::min<int64_t>(kTile, s.height - ty0);
    if (s.records != nullptr)
      gather_tile<true>(s, t, tx0, ty0, L);
    else
      gather_tile<false>(s, t, tx0, ty0, L);
    for (int row = 0; row < h; ++row)
      for (int seg = 0; seg * kLanes < w; ++seg) {
        const int col0 = seg * kLanes, n_lanes = (int)std::min<int64_t>(kLanes, w - col0);
        const vi done = lane_index() >= splat_i(n_lanes);  // pixels outside the image start done
        bool tail = need == nullptr;
        for (int x = col0; x < col0 + n_lanes && !tail; ++x) tail = need[(ty0 + row) * s.width + tx0 + x] != 0;
        vf trans;
        vi lastk;
        const int64_t pix0 = (ty0 + row) * s.width + tx0 + col0;
        float* const o = out + pix0 * C;
        if (tail && !track)
          composite_segment<kC, true, false>(L, row, seg, ty0, C, head, done, o, n_lanes, trans, lastk);
        else if (tail)
          composite_segment<kC, true>(L, row, seg, ty0, C, head, done, o, n_lanes, trans, lastk);
        else
          composite_segment<kC, false>(L, row, seg, ty0, C, head, done, o, n_lanes, trans, lastk);
        for (int x = 0; x < n_lanes; ++x) {
          const int64_t pix = pix0 + x;
          out_alpha[pix] = 1.f - trans[x];
          if (track) final_T[pix] = trans[x], last[pix] = lastk[x];
        }
      }
  });
}

constexpr int64_t kBackAhead = 4;  // the backward prefetches the splat this many ahead in its (back to front) order

template <int kC>
void backward_simd(const Scene<float>& s, const float* final_T, const int32_t* last, const float* g_out,
                   const float* g_alpha, float* g_means2d, float* g_conics, float* g_opac, float* g_feats,
                   int attributes_move_geometry, int threads) {
  const int64_t n_tiles = s.tiles_x * s.tiles_y, C = kC > 0 ? kC : s.C;
  const int64_t head = head_channels<kC>(C);  // == kGeometryChannels whenever there are attribute channels
  const bool features_only = attributes_move_geometry == kFeaturesOnly;
  parallel_tiles(n_tiles, threads, [&](int64_t t) {
    const int64_t tx0 = (t % s.tiles_x) * kTile, ty0 = (t / s.tiles_x) * kTile;
    const int64_t w = std::min<int64_t>(kTile, s.width - tx0), h = std::min<int64_t>(kTile, s.height - ty0);
    // The colour behind Gaussian k enters dL/dalpha_k only through its dot product with the pixel's output
    // gradient, so one running scalar per pixel (suffix_dot = sum_{j>k} w_j f_j . dL/dout) replaces a
    // per-channel suffix buffer: half the channel work of the textbook backward, the same arithmetic.
    static thread_local std::vector<vf> gout;  // [channel][slot]; pixels outside the image stay 0
    gout.resize(C * kSlots);
    if (w < kTile || h < kTile) std::fill(gout.begin(), gout.end(), vf{});
    std::vector<vf> gf_dyn(kC > 0 ? 0 : C);
    vf gf_fixed[kC > 0 ? kC : 1];  // a compile-time channel count: the per-Gaussian sums stay in registers
    vf* gf = gf_fixed;
    if constexpr (kC == 0) gf = gf_dyn.data();
    vf trans[kSlots], galpha[kSlots], suffix_alpha[kSlots], suffix_dot[kSlots];
    vi lastk[kSlots];
    bool tail[kSlots];  // the segment has a non-zero gradient in a channel >= head
    for (int q = 0; q < kSlots; ++q) {  // pixels outside the image: last = -1, never active
      trans[q] = splat(1.f), galpha[q] = suffix_alpha[q] = suffix_dot[q] = vf{}, lastk[q] = splat_i(-1);
    }
    float* goutf = reinterpret_cast<float*>(gout.data());  // scalar views, as in forward_simd
    float* transf = reinterpret_cast<float*>(trans);
    float* galphaf = reinterpret_cast<float*>(galpha);
    int32_t* lastf = reinterpret_cast<int32_t*>(lastk);
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        const int64_t pix = (ty0 + y) * s.width + (tx0 + x), p = y * kTile + x;
        transf[p] = final_T[pix];
        lastf[p] = last[pix];
        galphaf[p] = g_alpha[pix];
        const float* go_pix = g_out + pix * C;
        for (int64_t ch = 0; ch < C; ++ch) goutf[ch * kSlots * kLanes + p] = go_pix[ch];
      }
    // A segment's last contributor: a Gaussian behind it gives the segment's pixels no weight, so they are
    // skipped before any arithmetic (the lane test below would reject them all after an exp).
    int32_t seg_last[kSlots];
    for (int q = 0; q < kSlots; ++q) {
      vi nonzero{};
      for (int64_t ch = head; ch < C; ++ch) nonzero |= gout[ch * kSlots + q] != splat(0.f);
      tail[q] = any(nonzero);
      seg_last[q] = -1;
      for (int x = 0; x < kLanes; ++x) seg_last[q] = std::max(seg_last[q], lastk[q][x]);
    }
    // Gaussians behind every pixel's last contributor got no weight: zero gradients, no work.
    const int32_t last_any = *std::max_element(seg_last, seg_last + kSlots);
    const int64_t start = s.tile_start[t], count = s.tile_count[t];
    for (int64_t k = count - 1; k > last_any; --k) {
      const int64_t e = start + k;
      g_means2d[2 * e] = g_means2d[2 * e + 1] = g_opac[e] = 0.f;
      g_conics[3 * e] = g_conics[3 * e + 1] = g_conics[3 * e + 2] = 0.f;
      std::fill(g_feats + e * C, g_feats + (e + 1) * C, 0.f);
    }
    for (int64_t k = std::min<int64_t>(count - 1, last_any); k >= 0; --k) {
      const int64_t e = start + k, g = s.ids[e];
      if (k >= kBackAhead) {  // the rows of a splat a few ahead (they lie scattered through the map)
        const int64_t ga = s.ids[e - kBackAhead];
        __builtin_prefetch(s.means2d + 2 * ga), __builtin_prefetch(s.conics + 3 * ga);
        __builtin_prefetch(s.opacities + ga), __builtin_prefetch(s.radii + 2 * ga);
        __builtin_prefetch(s.feats + ga * C), __builtin_prefetch(s.feats + ga * C + C - 1);
      }
      const Box b = pixel_box(s, g, tx0, ty0);
      const Segments sg = segments(b, tx0, s.means2d[2 * g]);
      const float my = s.means2d[2 * g + 1];
      const float ca = s.conics[3 * g], cb = s.conics[3 * g + 1], cc = s.conics[3 * g + 2], o = s.opacities[g];
      const float* f = s.feats + g * C;
      vf gmx{}, gmy{}, ga{}, gb{}, gc{}, go{};
      for (int64_t ch = 0; ch < C; ++ch) gf[ch] = vf{};
      const vi kk = splat_i((int32_t)k);
      if (sg.seg0 <= sg.seg1) {  // rows and segments its ellipse reaches (see Reach)
        const Reach reach(s.means2d[2 * g] - float(tx0) - 0.5f, my - float(ty0) - 0.5f, ca, cb, cc, o,
                          (int32_t)(b.x0 - tx0), (int32_t)(b.x1 - tx0), (int32_t)(b.y0 - ty0), (int32_t)(b.y1 - ty0));
        // Two passes, as in the forward: the (row, segment) pairs it reaches and their exps first, then the
        // gradients pair by pair (the same arithmetic in the same order; 7-10 % faster on captured mapping steps).
        int n_pairs = 0;
        int32_t pair_q[kSlots];
        float pair_dy[kSlots];
        vf pair_vis[kSlots], pair_y[kSlots];
        const Exp2Coefficients ex = exp2_coefficients(ca, cb, cc);
        vi reached{};
        for (int64_t py = b.y0; py <= b.y1; ++py) {
          const int r = (int)(py - ty0);
          if (py == b.y0 || r % kLanes == 0) reached = reach.rows(r & ~(kLanes - 1));
          const int32_t row_segs = reached[r % kLanes];
          if (row_segs == 0) continue;
          const float dy = my - (float(py) + 0.5f);
          const vf row_term = splat(ex.e_c * dy * dy), cross = splat(ex.e_b * dy);
          for (int seg = sg.seg0; seg <= sg.seg1; ++seg) {
            const int q = r * kSegs + seg;
            if (k > seg_last[q] || !((row_segs >> seg) & 1)) continue;
            const vf dx = sg.dx[seg];
            const vf y = (splat(ex.e_a) * dx + cross) * dx + row_term;  // as the forward's
            pair_y[n_pairs] = y, pair_vis[n_pairs] = fast_exp2(y);
            pair_q[n_pairs] = q, pair_dy[n_pairs] = dy, ++n_pairs;
          }
        }
        for (int pi = 0; pi < n_pairs; ++pi) {
          const int q = pair_q[pi], seg = q % kSegs;
          const float dy = pair_dy[pi];
          const vf cross = splat(cb * dy), dx = sg.dx[seg], vis = pair_vis[pi];
          const vf raw = splat(o) * vis;
          const vf alpha = vmin(splat(max_alpha<float>()), raw);
          const vi valid = sg.cols[seg] & (kk <= lastk[q]) & (pair_y[pi] <= splat(0.f)) &
                           (alpha >= splat(alpha_threshold<float>()));
          if (!any(valid)) continue;
          const vf inv_one_minus = splat(1.f) / (splat(1.f) - alpha);
          const vf T_before = trans[q] * inv_one_minus;
          const vf wgt = select(valid, alpha * T_before, splat(0.f));
          if (features_only) {  // the same weights, so the same feature gradients; nothing for the geometry
            for (int64_t ch = 0; ch < head; ++ch) gf[ch] += wgt * gout[ch * kSlots + q];
            if (tail[q])
              for (int64_t ch = head; ch < C; ++ch) gf[ch] += wgt * gout[ch * kSlots + q];
            trans[q] = select(valid, T_before, trans[q]);
            continue;
          }
          vf f_dot{};
          const auto channel = [&](int64_t ch) {
            const vf go_ch = gout[ch * kSlots + q];
            gf[ch] += wgt * go_ch;
            f_dot += splat(f[ch]) * go_ch;
          };
          for (int64_t ch = 0; ch < head; ++ch) channel(ch);  // two loops with compile-time bounds, not one
          if (tail[q]) {                                       // with a runtime end: 12-15 % faster
            if (attributes_move_geometry)
              for (int64_t ch = head; ch < C; ++ch) channel(ch);
            else  // the attributes' own gradients only: they leave dL/dalpha (and the geometry) alone
              for (int64_t ch = head; ch < C; ++ch) gf[ch] += wgt * gout[ch * kSlots + q];
          }
          const vf dL_dalpha =
              T_before * (f_dot + galpha[q]) - (suffix_dot[q] + suffix_alpha[q] * galpha[q]) * inv_one_minus;
          suffix_dot[q] += wgt * f_dot;
          suffix_alpha[q] += wgt;
          trans[q] = select(valid, T_before, trans[q]);
          const vi passes = valid & (raw <= splat(max_alpha<float>()));  // the clamp passes no gradient
          const vf dL_dsigma = select(passes, -alpha * dL_dalpha, splat(0.f));
          go += select(passes, vis * dL_dalpha, splat(0.f));
          ga += splat(0.5f) * dx * dx * dL_dsigma;
          gc += splat(0.5f * dy * dy) * dL_dsigma;
          gb += dx * splat(dy) * dL_dsigma;
          gmx += (splat(ca) * dx + cross) * dL_dsigma;
          gmy += (splat(cc * dy) + splat(cb) * dx) * dL_dsigma;
        }
      }
      const vf geo[8] = {gmx, gmy, ga, gb, gc, go, kC > 0 ? gf[0] : vf{}, kC > 1 ? gf[1] : vf{}};
      const vf geo_sums = hsum8(geo);
      g_means2d[2 * e] = geo_sums[0], g_means2d[2 * e + 1] = geo_sums[1];
      g_conics[3 * e] = geo_sums[2], g_conics[3 * e + 1] = geo_sums[3], g_conics[3 * e + 2] = geo_sums[4];
      g_opac[e] = geo_sums[5];
      int64_t ch = 0;
      if constexpr (kC > 1) {  // the first two channels rode along with the geometry's six sums
        g_feats[e * C] = geo_sums[6], g_feats[e * C + 1] = geo_sums[7];
        ch = 2;
      }
      for (; ch + kLanes <= C; ch += kLanes) {
        const vf sums = hsum8(gf + ch);
        __builtin_memcpy(g_feats + e * C + ch, &sums, sizeof sums);
      }
      for (; ch < C; ++ch) g_feats[e * C + ch] = hsum(gf[ch]);
    }
  });
}

// Channel counts worth a compiled-in loop: RGB + depth, and RGB + 8 / 16 / 32 attributes + depth.
template <typename F>
void dispatch_channels(int64_t C, F&& run) {
  switch (C) {
    case 4: run(std::integral_constant<int, 4>{}); break;
    case 12: run(std::integral_constant<int, 12>{}); break;
    case 20: run(std::integral_constant<int, 20>{}); break;
    case 36: run(std::integral_constant<int, 36>{}); break;
    default: run(std::integral_constant<int, 0>{});
  }
}

// Per-intersection gradients -> per-Gaussian sums: out_k[ids[e]] += in_k[e] for the four gradient arrays
// of `backward` (widths 2, 3, 1, C), in one pass; `out_*` are zeroed first. Threads own contiguous ranges of
// Gaussians: each scans every intersection and adds those of its own (the adds, not the scan, are the cost),
// so no two threads write one row and the sums come out in the same order as a serial pass.
template <typename T>
void sum_by_gaussian(int64_t m, int64_t n, int64_t C, const int64_t* ids, const T* e_means2d, const T* e_conics,
                     const T* e_opac, const T* e_feats, T* means2d, T* conics, T* opac, T* feats, int threads) {
  threads = std::max(1, std::min<int>(threads, (int)std::max<int64_t>(n / 4096, 1)));
  parallel_tiles(threads, threads, [&](int64_t part) {
    const int64_t lo = n * part / threads, hi = n * (part + 1) / threads;
    std::fill(means2d + 2 * lo, means2d + 2 * hi, T(0));
    std::fill(conics + 3 * lo, conics + 3 * hi, T(0));
    std::fill(opac + lo, opac + hi, T(0));
    std::fill(feats + C * lo, feats + C * hi, T(0));
    for (int64_t e = 0; e < m; ++e) {
      const int64_t g = ids[e];
      if (g < lo || g >= hi) continue;
      means2d[2 * g] += e_means2d[2 * e];
      means2d[2 * g + 1] += e_means2d[2 * e + 1];
      for (int k = 0; k < 3; ++k) conics[3 * g + k] += e_conics[3 * e + k];
      opac[g] += e_opac[e];
      const T* src = e_feats + e * C;
      T* dst = feats + g * C;
      for (int64_t ch = 0; ch < C; ++ch) dst[ch] += src[ch];
    }
  });
}

template <typename T>
Scene<T> make_scene(const void* means2d, const void* conics, const void* opacities, const void* feats,
                    const int32_t* radii, const int64_t* ids, const int64_t* tile_start, const int64_t* tile_count,
                    int64_t C, int64_t width, int64_t height, int64_t tiles_x, int64_t tiles_y, int64_t tile) {
  return Scene<T>{(const T*)means2d, (const T*)conics, (const T*)opacities, (const T*)feats, radii, ids,
                  tile_start, tile_count, C, width, height, tiles_x, tiles_y, tile};
}

// One float32 render without gradients in one call: project every Gaussian (the cheap cull first), gather those
// with a footprint into compact arrays (depth and the feature parts side by side, in index order), bin them and
// composite with the vectorised kernel. The same image, bit for bit, as project -> bin -> forward_simd on the
// rows the cull keeps (the same per-Gaussian math, the same depth order with ties by index), without the
// copies a caller makes to pre-cull and concatenate the features. parts: n_parts arrays (N, part_channels[i]).
// Writes means2d (N, 2) in OpenCV pixels (centre = integer; 0 where radii are 0) and radii (N, 2).
void render_simd(int64_t n, const float* means, const float* quats, const float* log_scales,
                 const float* opacities, const float* viewmat, const float* K, int64_t width, int64_t height,
                 float near_plane, float far_plane, float eps2d, int64_t n_parts, const float* const* parts,
                 const int64_t* part_channels, const uint8_t* need, float* means2d_out, int32_t* radii,
                 float* out, float* out_alpha, int threads) {
  int64_t C = 1;
  for (int64_t i = 0; i < n_parts; ++i) C += part_channels[i];
  const auto means2d = scratch<float>(2 * n), conics = scratch<float>(3 * n), depths = scratch<float>(n);
  project_simd(n, means, quats, log_scales, opacities, viewmat, K, width, height, near_plane, far_plane, eps2d,
               means2d.get(), conics.get(), depths.get(), radii, threads);
  const int64_t chunk = 4096, n_chunks = (n + chunk - 1) / chunk;
  std::vector<int64_t> first(n_chunks + 1, 0);  // compact index of each chunk's first visible Gaussian
  parallel_tiles(n_chunks, threads, [&](int64_t c) {
    int64_t k = 0;
    for (int64_t i = c * chunk; i < std::min(n, (c + 1) * chunk); ++i) k += radii[2 * i] > 0 || radii[2 * i + 1] > 0;
    first[c + 1] = k;
  });
  for (int64_t c = 0; c < n_chunks; ++c) first[c + 1] += first[c];
  const int64_t v = first[n_chunks];
  const auto m2 = scratch<float>(2 * v), feats = scratch<float>(C * v);
  const auto rad = scratch<int32_t>(2 * v);
  const auto records = scratch<SplatRecord>(v);  // what compositing reads; m2 and rad are for binning
  // One thread sorts the visible Gaussians by depth (ranks = their rows below) while the others, then it too,
  // gather their rows chunk by chunk (work item 0 is the sort; the sort alone does not split across threads).
  std::vector<int64_t> order;
  parallel_tiles(n_chunks + 1, threads, [&](int64_t item) {
    if (item == 0) {
      order = depth_order(n, radii, depths.get(), /*ranks=*/true);
      return;
    }
    const int64_t c = item - 1;
    int64_t k = first[c];
    for (int64_t i = c * chunk; i < std::min(n, (c + 1) * chunk); ++i) {
      const bool seen = radii[2 * i] > 0 || radii[2 * i + 1] > 0;
      means2d_out[2 * i] = seen ? means2d[2 * i] - 0.5f : 0.f;
      means2d_out[2 * i + 1] = seen ? means2d[2 * i + 1] - 0.5f : 0.f;
      if (!seen) continue;
      std::copy(means2d.get() + 2 * i, means2d.get() + 2 * i + 2, m2.get() + 2 * k);
      std::copy(radii + 2 * i, radii + 2 * i + 2, rad.get() + 2 * k);
      records[k] = SplatRecord{means2d[2 * i], means2d[2 * i + 1], conics[3 * i], conics[3 * i + 1], conics[3 * i + 2],
                               opacities[i], radii[2 * i], radii[2 * i + 1],
                               reach_shape(conics[3 * i], conics[3 * i + 1], conics[3 * i + 2], opacities[i])};
      float* f = feats.get() + C * k;
      *f++ = depths[i];
      for (int64_t p = 0; p < n_parts; ++p) f = std::copy(parts[p] + part_channels[p] * i,
                                                        parts[p] + part_channels[p] * (i + 1), f);
      ++k;
    }
  });
  const int64_t tiles_x = (width + kTile - 1) / kTile, tiles_y = (height + kTile - 1) / kTile;
  std::vector<int64_t> count(tiles_x * tiles_y), start(tiles_x * tiles_y);
  std::unique_ptr<int64_t[]> ids;
  bin_in_order(order, m2.get(), rad.get(), tiles_x, tiles_y, kTile, count.data(), start.data(),
               [&ids](int64_t m) { ids = scratch<int64_t>(m); return ids.get(); }, threads);
  const Scene<float> s{m2.get(), nullptr, nullptr, feats.get(), rad.get(), ids.get(), start.data(),
                       count.data(), C, width, height, tiles_x, tiles_y, kTile, records.get()};
  dispatch_channels(C, [&](auto c) {  // no final_T and last: no backward follows
    forward_simd<decltype(c)::value>(s, need, out, out_alpha, nullptr, nullptr, threads);
  });
}

}  // namespace

#define SCENE_ARGS                                                                                        \
  const void *means2d, const void *conics, const void *opacities, const void *feats, const int32_t *radii, \
      const int64_t *ids, const int64_t *tile_start, const int64_t *tile_count, int64_t C, int64_t width,    \
      int64_t height, int64_t tiles_x, int64_t tiles_y, int64_t tile
#define SCENE_PASS means2d, conics, opacities, feats, radii, ids, tile_start, tile_count, C, width, height, \
                   tiles_x, tiles_y, tile

extern "C" {

int clipgs_abi_version() { return 15; }

// Vectorised float32 compositing (the default for float32 when tile == 16).
// need: (height, width) uint8, the pixels whose channels >= 4 are wanted, or null for all of them.
void clipgs_forward_simd_f32(SCENE_ARGS, const uint8_t* need, float* out, float* out_alpha, float* final_T,
                             int32_t* last, int threads) {
  const Scene<float> s = make_scene<float>(SCENE_PASS);
  dispatch_channels(C, [&](auto c) {
    forward_simd<decltype(c)::value>(s, need, out, out_alpha, final_T, last, threads);
  });
}
void clipgs_backward_simd_f32(SCENE_ARGS, const float* final_T, const int32_t* last, const float* g_out,
                              const float* g_alpha, float* g_means2d, float* g_conics, float* g_opac,
                              float* g_feats, int attributes_move_geometry, int threads) {
  const Scene<float> s = make_scene<float>(SCENE_PASS);
  dispatch_channels(C, [&](auto c) {
    backward_simd<decltype(c)::value>(s, final_T, last, g_out, g_alpha, g_means2d, g_conics, g_opac, g_feats,
                                      attributes_move_geometry, threads);
  });
}
// One no-gradient render: projection, cull, feature gathering, binning and vectorised compositing.
void clipgs_render_simd_f32(int64_t n, const float* means, const float* quats, const float* log_scales,
                            const float* opacities, const float* viewmat, const float* K, int64_t width,
                            int64_t height, double near_plane, double far_plane, double eps2d, int64_t n_parts,
                            const float* const* parts, const int64_t* part_channels, const uint8_t* need,
                            float* means2d, int32_t* radii, float* out, float* out_alpha, int threads) {
  render_simd(n, means, quats, log_scales, opacities, viewmat, K, width, height, float(near_plane),
              float(far_plane), float(eps2d), n_parts, parts, part_channels, need, means2d, radii, out, out_alpha,
              threads);
}
// For tests: the scalar float32 projection the vectorised one must reproduce.
void clipgs_project_scalar_f32(int64_t n, const float* means, const float* quats, const float* log_scales,
                               const float* opacities, const float* viewmat, const float* K, int64_t width,
                               int64_t height, double near_plane, double far_plane, double eps2d, float* means2d,
                               float* conics, float* depths, int32_t* radii, int threads) {
  project(n, means, quats, log_scales, opacities, viewmat, K, width, height, float(near_plane), float(far_plane),
          float(eps2d), means2d, conics, depths, radii, threads);
}
// For tests: the scalar float32 projection gradient the vectorised one must reproduce.
void clipgs_project_backward_scalar_f32(int64_t n, const float* means, const float* quats, const float* log_scales,
                                        const float* viewmat, const float* K, int64_t width, int64_t height,
                                        double eps2d, const int32_t* radii, const float* g_means2d,
                                        const float* g_conics, const float* g_depths, float* g_means,
                                        float* g_quats, float* g_log_scales, int threads) {
  project_backward(n, means, quats, log_scales, viewmat, K, width, height, float(eps2d), radii, g_means2d, g_conics,
                   g_depths, g_means, g_quats, g_log_scales, threads);
}
void clipgs_fast_exp2_f32(int64_t n, const float* x, float* y) {  // for tests: the compositor's 2^x
  for (int64_t i = 0; i < n; i += kLanes) {
    vf v{};
    for (int j = 0; j < kLanes && i + j < n; ++j) v[j] = x[i + j];
    const vf r = fast_exp2(v);
    for (int j = 0; j < kLanes && i + j < n; ++j) y[i + j] = r[j];
  }
}

#define DEFINE(SUFFIX, T)                                                                                  \
  void clipgs_forward_##SUFFIX(SCENE_ARGS, T* out, T* out_alpha, T* final_T, int32_t* last, int threads) {  \
    forward(make_scene<T>(SCENE_PASS), out, out_alpha, final_T, last, threads);                            \
  }                                                                                                        \
  void clipgs_backward_##SUFFIX(SCENE_ARGS, const T* final_T, const int32_t* last, const T* g_out,         \
                                const T* g_alpha, T* g_means2d, T* g_conics, T* g_opac, T* g_feats,        \
                                int attributes_move_geometry, int threads) {                               \
    backward(make_scene<T>(SCENE_PASS), final_T, last, g_out, g_alpha, g_means2d, g_conics, g_opac, g_feats, \
             attributes_move_geometry, threads);                                                           \
  }

#define DEFINE_PROJECT(SUFFIX, T)                                                                        \
  void clipgs_project_##SUFFIX(int64_t n, const T* means, const T* quats, const T* log_scales,              \
                               const T* opacities, const T* viewmat, const T* K, int64_t width,             \
                               int64_t height, double near_plane, double far_plane, double eps2d,           \
                               T* means2d, T* conics, T* depths, int32_t* radii, int threads) {             \
    project_fastest(n, means, quats, log_scales, opacities, viewmat, K, width, height, T(near_plane),         \
                    T(far_plane), T(eps2d), means2d, conics, depths, radii, threads);                        \
  }                                                                                                         \
  void clipgs_project_backward_##SUFFIX(int64_t n, const T* means, const T* quats, const T* log_scales,       \
                                        const T* viewmat, const T* K, int64_t width, int64_t height,         \
                                        double eps2d, const int32_t* radii, const T* g_means2d,             \
                                        const T* g_conics, const T* g_depths, T* g_means, T* g_quats,       \
                                        T* g_log_scales, int threads) {                                     \
    project_backward_fastest(n, means, quats, log_scales, viewmat, K, width, height, T(eps2d), radii,        \
                             g_means2d, g_conics, g_depths, g_means, g_quats, g_log_scales, threads);      \
  }                                                                                                         \
  void clipgs_cull_##SUFFIX(int64_t n, const T* means, const T* log_scales, const T* opacities, const T* viewmat,    \
                            const T* K, int64_t width, int64_t height, double near_plane, double far_plane,     \
                            double eps2d, const T* occ_far, int64_t occ_radius, double occ_margin,          \
                            uint8_t* keep, int threads) {                                                      \
    cull(n, means, log_scales, opacities, viewmat, K, width, height, T(near_plane), T(far_plane), T(eps2d),     \
         occ_far, occ_radius, T(occ_margin), keep, threads);                                                    \
  }                                                                                                             \
  void clipgs_bin_tiles_##SUFFIX(int64_t n, const T* means2d, const int32_t* radii, const T* depths,          \
                                 int64_t tiles_x, int64_t tiles_y, int64_t tile, int64_t* tile_count,       \
                                 const int64_t* tile_start, int64_t* ids, int threads) {                    \
    bin_tiles(n, means2d, radii, depths, tiles_x, tiles_y, tile, tile_count, tile_start, ids, threads);     \
  }

#define DEFINE_SUM(SUFFIX, T)                                                                             \
  void clipgs_sum_by_gaussian_##SUFFIX(int64_t m, int64_t n, int64_t C, const int64_t* ids, const T* e_means2d, \
                                       const T* e_conics, const T* e_opac, const T* e_feats, T* means2d,       \
                                       T* conics, T* opac, T* feats, int threads) {                            \
    sum_by_gaussian(m, n, C, ids, e_means2d, e_conics, e_opac, e_feats, means2d, conics, opac, feats, threads); \
  }

DEFINE_SUM(f32, float)
DEFINE_SUM(f64, double)
DEFINE_PROJECT(f32, float)
DEFINE_PROJECT(f64, double)
DEFINE(f32, float)
DEFINE(f64, double)
}
