// Efficient graph-based segmentation (Felzenszwalb & Huttenlocher, IJCV 2004) of a smoothed image.
//
// The grid graph with 8-connectivity (each pixel's right, down, down-right and up-right neighbours), edge
// weight = Euclidean distance of the pixels' channel vectors. Edges in increasing weight join components
// C1, C2 when w <= min(Int(C1) + k / |C1|, Int(C2) + k / |C2|), Int = the largest weight of the component's
// minimum spanning tree (the weight that last joined it, edges being taken in order); then, in the same
// order, any edge between a component smaller than min_size and another joins them. The same rules as
// scikit-image's `felzenszwalb` (whose `scale` is k * 255), which clipgs keeps as the reference: ties in
// weight may be taken in another order, nothing else differs.
//
// Labels 0..n-1 numbered by each segment's first pixel in row-major order. Plain C ABI for ctypes.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

struct Forest {
  std::vector<int32_t> parent, size;
  std::vector<float> internal;
  explicit Forest(int32_t n) : parent(n), size(n, 1), internal(n, 0.f) {
    for (int32_t i = 0; i < n; ++i) parent[i] = i;
  }
  int32_t find(int32_t a) {
    while (parent[a] != a) {  // path halving
      parent[a] = parent[parent[a]];
      a = parent[a];
    }
    return a;
  }
  int32_t join(int32_t a, int32_t b, float weight) {  // roots a != b; the smaller index stays the root
    if (b < a) std::swap(a, b);
    parent[b] = a;
    size[a] += size[b];
    internal[a] = weight;
    return a;
  }
};

// Edge ids ordered by weight (weights >= 0, so their IEEE bit patterns order like the values): a stable
// LSD radix sort, 11 bits per pass.
std::vector<int32_t> order_by_weight(const std::vector<float>& weights) {
  const int64_t m = (int64_t)weights.size();
  std::vector<uint32_t> keys(m), keys_tmp(m);
  std::vector<int32_t> ids(m), ids_tmp(m);
  for (int64_t e = 0; e < m; ++e) {
    std::memcpy(&keys[e], &weights[e], sizeof(uint32_t));
    ids[e] = (int32_t)e;
  }
  constexpr int kBits = 11, kBuckets = 1 << kBits;
  std::vector<int64_t> count(kBuckets);
  for (int shift = 0; shift < 32; shift += kBits) {
    std::fill(count.begin(), count.end(), 0);
    for (int64_t e = 0; e < m; ++e) ++count[(keys[e] >> shift) & (kBuckets - 1)];
    int64_t total = 0;
    for (auto& c : count) {
      const int64_t here = c;
      c = total;
      total += here;
    }
    for (int64_t e = 0; e < m; ++e) {
      const int64_t to = count[(keys[e] >> shift) & (kBuckets - 1)]++;
      keys_tmp[to] = keys[e];
      ids_tmp[to] = ids[e];
    }
    keys.swap(keys_tmp);
    ids.swap(ids_tmp);
  }
  return ids;
}

}  // namespace

extern "C" {

int clipgs_graph_segment_abi() { return 1; }

// image: (h, w, c) float32 row-major (already smoothed); labels: (h, w) int64 out. Returns the segment count.
int64_t clipgs_graph_segment(int64_t h, int64_t w, int64_t c, const float* image, double k, int64_t min_size,
                             int64_t* labels) {
  const int64_t n = h * w;
  if (n == 0) return 0;
  std::vector<int32_t> from, to;
  std::vector<float> weights;
  from.reserve(4 * n), to.reserve(4 * n), weights.reserve(4 * n);
  const int64_t dy[4] = {0, 1, 1, -1}, dx[4] = {1, 0, 1, 1};  // right, down, down-right, up-right
  for (int d = 0; d < 4; ++d)
    for (int64_t y = 0; y < h; ++y) {
      const int64_t y2 = y + dy[d];
      if (y2 < 0 || y2 >= h) continue;
      for (int64_t x = 0; x + dx[d] < w; ++x) {
        const int64_t a = y * w + x, b = y2 * w + x + dx[d];
        const float* pa = image + a * c;
        const float* pb = image + b * c;
        float sum = 0.f;
        for (int64_t ch = 0; ch < c; ++ch) sum += (pa[ch] - pb[ch]) * (pa[ch] - pb[ch]);
        from.push_back((int32_t)a), to.push_back((int32_t)b), weights.push_back(std::sqrt(sum));
      }
    }
  const std::vector<int32_t> order = order_by_weight(weights);
  Forest forest((int32_t)n);
  const float kf = (float)k;
  for (const int32_t e : order) {
    const int32_t a = forest.find(from[e]), b = forest.find(to[e]);
    if (a == b) continue;
    const float w_e = weights[e];
    if (w_e <= std::min(forest.internal[a] + kf / forest.size[a], forest.internal[b] + kf / forest.size[b]))
      forest.join(a, b, w_e);
  }
  for (const int32_t e : order) {  // components below min_size join their cheapest neighbour
    const int32_t a = forest.find(from[e]), b = forest.find(to[e]);
    if (a != b && (forest.size[a] < min_size || forest.size[b] < min_size)) forest.join(a, b, weights[e]);
  }
  std::vector<int64_t> label_of(n, -1);  // by root: roots are their segment's first pixel, so this numbers
  int64_t next = 0;                      // segments in row-major order of their first pixel
  for (int64_t p = 0; p < n; ++p) {
    const int32_t r = forest.find((int32_t)p);
    if (label_of[r] < 0) label_of[r] = next++;
    labels[p] = label_of[r];
  }
  return next;
}

}  // extern "C"
