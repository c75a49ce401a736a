// Nearest-hit ray casting of a pinhole camera's pixels against the synthetic scenes' primitives (boxes
// rotated about z, spheres, vertical capped cylinders): the compiled twin of raycast.cast_numpy, with the
// same arithmetic and the same tie rule (at equal distance the earlier primitive wins). Each primitive is
// culled to the image rectangle it can cover and skipped once a ray has hit something nearer than its
// bounding sphere, so a frame costs what its visible surfaces cover. Rows run in parallel (OpenMP).
// Plain C ABI called through ctypes (see raycast.py).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

constexpr double kEps = 1e-6;
constexpr double kInf = std::numeric_limits<double>::infinity();
enum Kind : int32_t { kBox = 0, kSphere = 1, kCylinder = 2 };

// Primitive parameters, 8 doubles each: box (cx, cy, cz, hx, hy, hz, cos yaw, sin yaw);
// sphere (cx, cy, cz, r, -, -, -, -); cylinder (bx, by, bz, r, height, -, -, -).
struct Hit {
  double t = kInf;
  double n[3] = {0, 0, 0};
};

inline bool box_hit(const double* p, const double* o, const double* d, Hit& h) {
  const double c = p[6], s = p[7];
  const double ow[3] = {o[0] - p[0], o[1] - p[1], o[2] - p[2]};
  // local = world @ R with R = [[c, -s, 0], [s, c, 0], [0, 0, 1]] (world_from_local)
  const double ol[3] = {ow[0] * c + ow[1] * s, -ow[0] * s + ow[1] * c, ow[2]};
  const double dl[3] = {d[0] * c + d[1] * s, -d[0] * s + d[1] * c, d[2]};
  double t_near = -kInf, t_far = kInf;
  int axis = 0;
  for (int k = 0; k < 3; ++k) {
    const double inv = 1.0 / dl[k];
    double t0 = (-p[3 + k] - ol[k]) * inv, t1 = (p[3 + k] - ol[k]) * inv;
    double lo = std::min(t0, t1), hi = std::max(t0, t1);
    if (std::isnan(lo)) lo = -kInf;
    if (std::isnan(hi)) hi = kInf;
    if (lo > t_near) { t_near = lo; axis = k; }
    t_far = std::min(t_far, hi);
  }
  if (!(t_near <= t_far && t_near > kEps)) return false;
  double nl[3] = {0, 0, 0};
  nl[axis] = dl[axis] > 0 ? -1.0 : (dl[axis] < 0 ? 1.0 : 0.0);
  h.t = t_near;  // world normal = R @ local normal
  h.n[0] = c * nl[0] - s * nl[1];
  h.n[1] = s * nl[0] + c * nl[1];
  h.n[2] = nl[2];
  return true;
}

inline bool sphere_hit(const double* p, const double* o, const double* d, Hit& h) {
  const double oc[3] = {o[0] - p[0], o[1] - p[1], o[2] - p[2]};
  const double b = oc[0] * d[0] + oc[1] * d[1] + oc[2] * d[2];
  const double disc = b * b - (oc[0] * oc[0] + oc[1] * oc[1] + oc[2] * oc[2] - p[3] * p[3]);
  const double root = std::sqrt(std::max(disc, 0.0));
  double t = -b - root;
  if (!(t > kEps)) t = -b + root;
  if (!(disc >= 0 && t > kEps)) return false;
  h.t = t;
  for (int k = 0; k < 3; ++k) h.n[k] = (o[k] + d[k] * t - p[k]) / p[3];
  return true;
}

inline bool cylinder_hit(const double* p, const double* o, const double* d, Hit& h) {
  const double bx = p[0], by = p[1], bz = p[2], r = p[3], height = p[4];
  const double ox = o[0] - bx, oy = o[1] - by;
  const double a = d[0] * d[0] + d[1] * d[1];
  const double b = ox * d[0] + oy * d[1];
  const double cc = ox * ox + oy * oy - r * r;
  const double disc = b * b - a * cc;
  const double root = std::sqrt(std::max(disc, 0.0));
  double best = kInf;
  double n[3] = {0, 0, 0};
  for (double t : {(-b - root) / a, (-b + root) / a}) {  // side wall
    const double z = o[2] + t * d[2];
    if (disc >= 0 && a > 1e-12 && t > kEps && z >= bz && z <= bz + height && t < best) {
      best = t;
      n[0] = (o[0] + d[0] * t - bx) / r;
      n[1] = (o[1] + d[1] * t - by) / r;
      n[2] = 0.0;
    }
  }
  for (int cap = 0; cap < 2; ++cap) {
    const double zc = cap ? bz + height : bz;
    const double t = (zc - o[2]) / d[2];
    if (!std::isfinite(t)) continue;
    const double px = o[0] + d[0] * t - bx, py = o[1] + d[1] * t - by;
    if (t > kEps && px * px + py * py <= r * r && t < best) {
      best = t;
      n[0] = 0.0;
      n[1] = 0.0;
      n[2] = cap ? 1.0 : -1.0;
    }
  }
  if (!(best < kInf)) return false;
  h.t = best;
  std::copy(n, n + 3, h.n);
  return true;
}

inline bool near_sphere(const double* o, const double* d, const double* sphere) {
  const double oc[3] = {o[0] - sphere[0], o[1] - sphere[1], o[2] - sphere[2]};
  const double b = oc[0] * d[0] + oc[1] * d[1] + oc[2] * d[2];
  const double c = oc[0] * oc[0] + oc[1] * oc[1] + oc[2] * oc[2] - sphere[3] * sphere[3];
  return c <= 0 || (b < 0 && b * b >= c);
}

// Conservative pixel rectangle [x0, x1) x [y0, y1) covered by a primitive: its corners (a box's own, else the
// camera-aligned cube around its bounding sphere) projected; the whole image when one is behind the camera.
void primitive_rect(const double* corners, int n_corners, const double* K, const double* w2c, int64_t width,
                    int64_t height, int64_t rect[4]) {
  rect[0] = 0; rect[1] = width; rect[2] = 0; rect[3] = height;
  double u0 = kInf, u1 = -kInf, v0 = kInf, v1 = -kInf;
  for (int c = 0; c < n_corners; ++c) {
    const double* q = corners + 3 * c;
    double x[3];
    for (int i = 0; i < 3; ++i) x[i] = w2c[i * 4] * q[0] + w2c[i * 4 + 1] * q[1] + w2c[i * 4 + 2] * q[2] + w2c[i * 4 + 3];
    if (x[2] <= 1e-3) return;
    const double u = K[0] * x[0] / x[2] + K[1] * x[1] / x[2] + K[2], v = K[4] * x[1] / x[2] + K[5];
    u0 = std::min(u0, u); u1 = std::max(u1, u); v0 = std::min(v0, v); v1 = std::max(v1, v);
  }
  // a pixel's rays start within half a pixel of its centre: pad by 2 and clip
  rect[0] = std::clamp<int64_t>((int64_t)std::floor(u0) - 2, 0, width);
  rect[1] = std::clamp<int64_t>((int64_t)std::ceil(u1) + 2, 0, width);
  rect[2] = std::clamp<int64_t>((int64_t)std::floor(v0) - 2, 0, height);
  rect[3] = std::clamp<int64_t>((int64_t)std::ceil(v1) + 2, 0, height);
}

void corners_of(int32_t kind, const double* p, const double* sphere, double out[24]) {
  for (int c = 0; c < 8; ++c) {
    const double sx = (c & 1) ? 1 : -1, sy = (c & 2) ? 1 : -1, sz = (c & 4) ? 1 : -1;
    if (kind == kBox) {  // world = centre + R @ (s * half)
      const double lx = sx * p[3], ly = sy * p[4];
      out[3 * c] = p[0] + p[6] * lx - p[7] * ly;
      out[3 * c + 1] = p[1] + p[7] * lx + p[6] * ly;
      out[3 * c + 2] = p[2] + sz * p[5];
    } else {
      out[3 * c] = sphere[0] + sx * sphere[3];
      out[3 * c + 1] = sphere[1] + sy * sphere[3];
      out[3 * c + 2] = sphere[2] + sz * sphere[3];
    }
  }
}

}  // namespace

extern "C" {

int clipgs_raycast_abi_version() { return 1; }

// Casts n_sub rays per pixel of a pinhole camera (K (3, 3), no skew; world_from_camera c2w (4, 4), OpenCV
// axes): sub-ray s of pixel (x, y) goes through (x + offsets[s, 0], y + offsets[s, 1]). Scene: n_prims
// primitives (kinds (P,), params (P, 8), owner object (P,) non-decreasing) with bounding spheres (P, 4). The
// nearest hit wins; at equal distance the earlier primitive does, as in the reference. Primitives are visited
// nearest-first (by the distance from the eye to their bounding sphere) and a ray stops once the next one
// cannot be nearer.
// Out (per sub-ray, pixel): z (S, H, W) camera depth in metres (0 = miss), obj (S, H, W) object index or -1,
// normal (S, H, W, 3) outward unit world normal, point (S, H, W, 3) world hit point (0 = miss).
void clipgs_raycast(int64_t width, int64_t height, int64_t n_sub, const double* offsets, const double* K,
                    const double* c2w, int64_t n_prims, const int32_t* kinds, const double* params,
                    const int32_t* owner, const double* spheres, double* z_out, int32_t* obj_out, double* n_out,
                    double* p_out, int threads) {
  const double eye[3] = {c2w[3], c2w[7], c2w[11]};
  double w2c[16] = {0};  // rigid inverse: R^T, -R^T t
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) w2c[i * 4 + j] = c2w[j * 4 + i];
    w2c[i * 4 + 3] = -(c2w[i] * eye[0] + c2w[4 + i] * eye[1] + c2w[8 + i] * eye[2]);
  }
  w2c[15] = 1.0;
  std::vector<int64_t> rects(std::max<int64_t>(n_prims, 1) * 4);
  std::vector<double> lower(n_prims);
  std::vector<int64_t> order(n_prims);
  for (int64_t j = 0; j < n_prims; ++j) {
    double corners[24];
    corners_of(kinds[j], params + 8 * j, spheres + 4 * j, corners);
    primitive_rect(corners, 8, K, w2c, width, height, rects.data() + 4 * j);
    const double* c = spheres + 4 * j;
    lower[j] = std::sqrt((c[0] - eye[0]) * (c[0] - eye[0]) + (c[1] - eye[1]) * (c[1] - eye[1]) +
                         (c[2] - eye[2]) * (c[2] - eye[2])) - c[3];
    order[j] = j;
  }
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return lower[a] < lower[b]; });
  const int64_t pixels = width * height;
  threads = std::max(1, threads);
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads)
  for (int64_t row = 0; row < n_sub * height; ++row) {
    const int64_t s = row / height, y = row % height;
    std::vector<int64_t> active;  // this row's primitives, nearest first
    active.reserve(n_prims);
    for (int64_t j : order)
      if (y >= rects[4 * j + 2] && y < rects[4 * j + 3]) active.push_back(j);
    const double yc = (y + offsets[2 * s + 1] - K[5]) / K[4];
    for (int64_t x = 0; x < width; ++x) {
      const int64_t i = s * pixels + y * width + x;
      const double xc = (x + offsets[2 * s] - K[2]) / K[0];
      double d[3];
      for (int k = 0; k < 3; ++k) d[k] = c2w[4 * k] * xc + c2w[4 * k + 1] * yc + c2w[4 * k + 2];
      const double norm = std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
      for (double& v : d) v /= norm;
      Hit best;
      int64_t best_j = -1;
      for (int64_t j : active) {
        if (lower[j] > best.t) break;
        if (x < rects[4 * j] || x >= rects[4 * j + 1] || !near_sphere(eye, d, spheres + 4 * j)) continue;
        Hit h;
        const double* p = params + 8 * j;
        const bool hit = kinds[j] == kBox ? box_hit(p, eye, d, h)
                         : kinds[j] == kSphere ? sphere_hit(p, eye, d, h) : cylinder_hit(p, eye, d, h);
        if (hit && (h.t < best.t || (h.t == best.t && j < best_j))) {
          best = h;
          best_j = j;
        }
      }
      const bool hit = best_j >= 0;
      obj_out[i] = hit ? owner[best_j] : -1;
      z_out[i] = hit ? best.t / norm : 0.0;  // the camera-frame ray (xc, yc, 1) has z = 1
      for (int k = 0; k < 3; ++k) {
        n_out[3 * i + k] = best.n[k];
        p_out[3 * i + k] = hit ? eye[k] + d[k] * best.t : 0.0;
      }
    }
  }
}

}  // extern "C"
