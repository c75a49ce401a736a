// Point-to-plane ICP normal equations for one Gauss-Newton step: the compiled twin of
// clipgs.mapping.icp._normal_equations_numpy, with the same association, rejection and Huber weights (the sums
// run in a different order, so results agree to rounding). One pass over the frame's points, no temporaries:
// numpy spent ~3 ms per step at 160 x 120 on a dozen array passes, this ~0.1 ms.
// Plain C ABI called through ctypes (see icp.py).
#include <cmath>
#include <cstdint>

namespace {

// Huber-weighted Gauss-Newton sums over 6-parameter Jacobians: the upper triangle of A and b = -J^T W r.
struct NormalEquations {
  double A[21] = {0}, b[6] = {0}, sum_r2 = 0;

  void add(const double* J, double r, double huber) {
    const double ar = std::fabs(r);
    const double wgt = ar <= huber ? 1.0 : huber / std::fmax(ar, 1e-12);
    for (int a = 0, k = 0; a < 6; ++a) {
      const double wa = wgt * J[a];
      for (int c = a; c < 6; ++c, ++k) A[k] += wa * J[c];
      b[a] -= wa * r;
    }
    sum_r2 += r * r;
  }

  // A (6, 6) symmetric and b (6), row-major; stats = (pairs, sum of squared residuals).
  void write(double* A_out, double* b_out, double* stats, double pairs) const {
    for (int a = 0, k = 0; a < 6; ++a) {
      for (int c = a; c < 6; ++c, ++k) A_out[6 * a + c] = A_out[6 * c + a] = A[k];
      b_out[a] = b[a];
    }
    stats[0] = pairs;
    stats[1] = sum_r2;
  }
};

// Point s moved by the rigid T (4, 4, row-major).
inline void transform(const double* T, const double* s, double* out) {
  for (int r = 0; r < 3; ++r) out[r] = T[4 * r] * s[0] + T[4 * r + 1] * s[1] + T[4 * r + 2] * s[2] + T[4 * r + 3];
}

}  // namespace

extern "C" {

// n frame points src (n, 3) and normals src_n (n, 3) (zero: none), camera frame.
// MT (4, 4) row-major: frame camera -> model camera at the current estimate; M_rot (3, 3): predicted camera ->
// model camera rotation; T (4, 4): frame camera -> predicted camera (the estimate).
// K (3, 3); model_v, model_n (h * w, 3): the model view's points and normals (normal zero: no model there).
// Outputs: A (6, 6) and b (6) of the weighted normal equations in the predicted camera (b = -J^T W r),
// stats = (pairs kept, sum of their squared residuals).
void clipgs_icp_normal_equations(int64_t n, const double* src, const double* src_n, const double* MT,
                                 const double* M_rot, const double* T, const double* K, int64_t w, int64_t h,
                                 const double* model_v, const double* model_n, double max_distance_sq,
                                 double min_normal_cos, double huber, double* A, double* b, double* stats) {
  NormalEquations eq;
  double kept = 0;
  const double fx = K[0], cx = K[2], fy = K[4], cy = K[5];
  for (int64_t i = 0; i < n; ++i) {
    const double* s = src + 3 * i;
    const double px = MT[0] * s[0] + MT[1] * s[1] + MT[2] * s[2] + MT[3];
    const double py = MT[4] * s[0] + MT[5] * s[1] + MT[6] * s[2] + MT[7];
    const double pz = MT[8] * s[0] + MT[9] * s[1] + MT[10] * s[2] + MT[11];
    if (!(pz > 1e-6)) continue;
    const double u = std::nearbyint(fx * px * (1.0 / pz) + cx), v = std::nearbyint(fy * py * (1.0 / pz) + cy);
    if (!(u >= 0 && u < w && v >= 0 && v < h)) continue;
    const int64_t pix = static_cast<int64_t>(v) * w + static_cast<int64_t>(u);
    const double* nm = model_n + 3 * pix;
    if (nm[0] == 0 && nm[1] == 0 && nm[2] == 0) continue;
    const double* q = model_v + 3 * pix;
    const double dx = px - q[0], dy = py - q[1], dz = pz - q[2];
    const double r = dx * nm[0] + dy * nm[1] + dz * nm[2];
    const double* sn = src_n + 3 * i;
    const double rnx = MT[0] * sn[0] + MT[1] * sn[1] + MT[2] * sn[2];
    const double rny = MT[4] * sn[0] + MT[5] * sn[1] + MT[6] * sn[2];
    const double rnz = MT[8] * sn[0] + MT[9] * sn[1] + MT[10] * sn[2];
    if (rnx * nm[0] + rny * nm[1] + rnz * nm[2] < min_normal_cos) continue;  // 0 where the frame has none
    if (!(dx * dx + dy * dy + dz * dz < max_distance_sq)) continue;
    // The step is taken in the predicted camera: the point there and the model normal rotated into it.
    double x[3];
    transform(T, s, x);
    const double nx = nm[0] * M_rot[0] + nm[1] * M_rot[3] + nm[2] * M_rot[6];
    const double ny = nm[0] * M_rot[1] + nm[1] * M_rot[4] + nm[2] * M_rot[7];
    const double nz = nm[0] * M_rot[2] + nm[1] * M_rot[5] + nm[2] * M_rot[8];
    const double J[6] = {x[1] * nz - x[2] * ny, x[2] * nx - x[0] * nz, x[0] * ny - x[1] * nx, nx, ny, nz};
    eq.add(J, r, huber);
    kept += 1;
  }
  eq.write(A, b, stats, kept);
}

// The photometric term of coloured ICP for one Gauss-Newton step: the compiled twin of
// clipgs.mapping.icp._colour_equations_numpy. Frame points (n, 3) with intensities src_I (n) are moved by MT into
// the model camera and projected (continuous pixel coordinates); those inside [1, w - 2) x [1, h - 2) whose nearest
// model pixel has a depth within max_depth_gap of theirs pair with the model intensity there (bilinear). A gain
// g = sum I_model / sum I_frame over the pairs takes out an exposure change; residual r = I_model - g I_frame,
// Jacobian through the bilinear image gradient (grad_u, grad_v, (h, w)) and the projection, in the predicted
// camera as clipgs_icp_normal_equations; Huber weights at `huber`. stats = (pairs, sum of squared residuals).
static inline double bilinear(const double* img, int64_t w, double u, double v) {
  const int64_t u0 = static_cast<int64_t>(std::floor(u)), v0 = static_cast<int64_t>(std::floor(v));
  const double a = u - u0, c = v - v0;
  const double* p = img + v0 * w + u0;
  return p[0] * (1 - a) * (1 - c) + p[1] * a * (1 - c) + p[w] * (1 - a) * c + p[w + 1] * a * c;
}

void clipgs_icp_colour_equations(int64_t n, const double* src, const double* src_I, const double* MT,
                                 const double* M_rot, const double* T, const double* K, int64_t w, int64_t h,
                                 const double* model_depth, const double* model_I, const double* grad_u,
                                 const double* grad_v, double max_depth_gap, double huber, double* A, double* b,
                                 double* stats) {
  const double fx = K[0], cx = K[2], fy = K[4], cy = K[5];
  // Where frame point i lands in the model view: (u, v, z) and whether it pairs.
  auto land = [&](int64_t i, double* p, double& u, double& v) -> bool {
    transform(MT, src + 3 * i, p);
    if (!(p[2] > 1e-3)) return false;
    u = fx * p[0] / p[2] + cx, v = fy * p[1] / p[2] + cy;
    if (!(u >= 1 && u < w - 2 && v >= 1 && v < h - 2)) return false;
    const int64_t pix = static_cast<int64_t>(std::nearbyint(v)) * w + static_cast<int64_t>(std::nearbyint(u));
    const double dm = model_depth[pix];
    return dm > 0 && std::fabs(dm - p[2]) < max_depth_gap;
  };
  double sum_model = 0, sum_frame = 0, pairs = 0, p[3], u, v;
  for (int64_t i = 0; i < n; ++i) {
    if (!land(i, p, u, v)) continue;
    sum_model += bilinear(model_I, w, u, v), sum_frame += src_I[i], pairs += 1;
  }
  NormalEquations eq;
  const double gain = sum_model / std::fmax(sum_frame, 1e-6);
  for (int64_t i = 0; i < n && pairs > 0; ++i) {
    if (!land(i, p, u, v)) continue;
    const double r = bilinear(model_I, w, u, v) - gain * src_I[i];
    const double gu = bilinear(grad_u, w, u, v), gv = bilinear(grad_v, w, u, v), z = p[2];
    const double dp[3] = {gu * fx / z, gv * fy / z, -(gu * fx * p[0] + gv * fy * p[1]) / (z * z)};
    // d r / d (point in the predicted camera) = dp M_rot; the point there moves as p -> p + omega x p + t.
    const double g[3] = {dp[0] * M_rot[0] + dp[1] * M_rot[3] + dp[2] * M_rot[6],
                         dp[0] * M_rot[1] + dp[1] * M_rot[4] + dp[2] * M_rot[7],
                         dp[0] * M_rot[2] + dp[1] * M_rot[5] + dp[2] * M_rot[8]};
    double x[3];
    transform(T, src + 3 * i, x);
    const double J[6] = {x[1] * g[2] - x[2] * g[1], x[2] * g[0] - x[0] * g[2], x[0] * g[1] - x[1] * g[0],
                         g[0], g[1], g[2]};
    eq.add(J, r, huber);
  }
  eq.write(A, b, stats, pairs);
}

// depth (h, w) metres, 0 = invalid; K (3, 3) -> vertices (h, w, 3) camera-frame points (integer pixel = pixel
// centre) and normals (h, w, 3): the compiled twin of icp.vertex_map + icp.normal_map (central differences,
// unit, facing the camera; zero on the border, where a neighbour is invalid or lies more than max_jump x depth
// away in z, or where the cross product vanishes). numpy: ~4 ms per 160 x 120 view on a dozen array passes.
void clipgs_icp_vertex_normal_map(const double* depth, int64_t h, int64_t w, const double* K, double max_jump,
                                  double* vertices, double* normals) {
  const double fx = K[0], cx = K[2], fy = K[4], cy = K[5];
  for (int64_t v = 0; v < h; ++v) {
    for (int64_t u = 0; u < w; ++u) {
      const double z = depth[v * w + u];
      double* p = vertices + 3 * (v * w + u);
      p[0] = (static_cast<double>(u) - cx) / fx * z;
      p[1] = (static_cast<double>(v) - cy) / fy * z;
      p[2] = z;
    }
  }
  for (int64_t i = 0; i < 3 * h * w; ++i) normals[i] = 0.0;
  for (int64_t v = 1; v + 1 < h; ++v) {
    for (int64_t u = 1; u + 1 < w; ++u) {
      const int64_t i = v * w + u;
      const double* c = vertices + 3 * i;
      const double z = c[2];
      if (!(z > 0)) continue;
      const double* nb[4] = {c + 3, c - 3, c + 3 * w, c - 3 * w};  // right, left, down, up
      bool good = true;
      for (const double* q : nb) good = good && q[2] > 0 && std::fabs(q[2] - z) < max_jump * z;
      if (!good) continue;
      const double ax = nb[0][0] - nb[1][0], ay = nb[0][1] - nb[1][1], az = nb[0][2] - nb[1][2];
      const double bx = nb[2][0] - nb[3][0], by = nb[2][1] - nb[3][1], bz = nb[2][2] - nb[3][2];
      double nx = ay * bz - az * by, ny = az * bx - ax * bz, nz = ax * by - ay * bx;
      const double norm = std::sqrt(nx * nx + ny * ny + nz * nz);
      if (!(norm > 0)) continue;
      nx /= norm, ny /= norm, nz /= norm;
      const double s = nx * c[0] + ny * c[1] + nz * c[2] > 0 ? -1.0 : 1.0;  // face the camera (it looks along +z)
      double* n = normals + 3 * i;
      n[0] = s * nx, n[1] = s * ny, n[2] = s * nz;
    }
  }
}

}  // extern "C"
