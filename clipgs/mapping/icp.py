"""Point-to-plane ICP of a frame's depth against a model depth view (KinectFusion-style tracking).

The model is a depth image with known pose, e.g. the last keyframe's sensor depth (see
:func:`clipgs.mapping.pose_refine.icp_refine_pose` for why not the map's rendered depth). The frame's depth
points, moved by the current estimate, are projected into the model's camera and paired with the model point
and normal at that pixel (projective data association). Pairs further apart than ``max_distance_m`` or whose
normals disagree are dropped, the rest are weighted by a Huber kernel, and a damped Gauss-Newton step on the
six pose parameters follows (the damping holds directions the geometry does not constrain, e.g. along a
corridor wall, at the prediction). Depth alone: exposure changes and textureless walls do not bias it, and a
few 6 x 6 solves cost a few milliseconds, far less than a photometric refinement through the rasterizer.
"""
from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from clipgs.native import load_or_warn


@dataclass
class IcpResult:
    """correction: (4, 4) rigid, maps points of the frame's camera into the predicted camera (true pose =
    predicted @ correction); inliers: share of valid frame points paired at the end; rmse_m: their point-to-plane
    RMS before the first step (rmse_before_m) and before the last; converged: the last step moved less than the
    tolerance; ok: enough pairs to trust the result."""

    correction: np.ndarray
    inliers: float
    rmse_m: float
    rmse_before_m: float
    iterations: int
    converged: bool
    ok: bool


def vertex_map(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """depth: (H, W) metres, 0 = invalid -> (H, W, 3) camera-frame points (integer pixel = pixel centre)."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w]
    z = depth.astype(np.float64)
    return np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=-1)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of (..., 3) arrays (np.cross's axis handling costs more than the arithmetic)."""
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


def normal_map(vertices: np.ndarray, max_jump: float = 0.05) -> np.ndarray:
    """(H, W, 3) points -> (H, W, 3) unit normals facing the camera from central differences; zero where a
    neighbour is invalid (z = 0) or lies more than ``max_jump`` x depth away in z (an occlusion edge)."""
    n = np.zeros_like(vertices)
    c = vertices[1:-1, 1:-1]
    right, left = vertices[1:-1, 2:], vertices[1:-1, :-2]
    down, up = vertices[2:, 1:-1], vertices[:-2, 1:-1]
    cross = _cross(right - left, down - up)
    z = c[..., 2]
    good = (z > 0) & np.all([(p[..., 2] > 0) & (np.abs(p[..., 2] - z) < max_jump * z)
                             for p in (right, left, down, up)], axis=0)
    norm = np.linalg.norm(cross, axis=-1)
    good &= norm > 0
    cross = cross / np.where(good, norm, 1.0)[..., None]
    flip = np.sum(cross * c, axis=-1) > 0  # face the camera (the camera looks along +z)
    cross[flip] *= -1
    n[1:-1, 1:-1] = np.where(good[..., None], cross, 0.0)
    return n


def _skew_exp(xi: np.ndarray) -> np.ndarray:
    """(6,) = (omega, t) -> (4, 4) rigid transform exp of the twist (rotation by Rodrigues, translation as is)."""
    omega, t = xi[:3], xi[3:]
    theta = np.linalg.norm(omega)
    W = np.array([[0, -omega[2], omega[1]], [omega[2], 0, -omega[0]], [-omega[1], omega[0], 0]])
    R = np.eye(3) + W if theta < 1e-12 else (np.eye(3) + np.sin(theta) / theta * W
                                             + (1 - np.cos(theta)) / theta**2 * W @ W)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    """The compiled normal equations (csrc/icp.cpp), or None (one warning) when they cannot be built here."""
    lib = load_or_warn("clipgs_icp", [Path(__file__).with_name("csrc") / "icp.cpp"],
                       "compiled ICP unavailable, pose tracking runs in NumPy (~5x slower)")
    if lib is None:
        return None
    p, i64, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    lib.clipgs_icp_normal_equations.argtypes = [i64, *([p] * 6), i64, i64, p, p, f64, f64, f64, p, p, p]
    lib.clipgs_icp_normal_equations.restype = None
    lib.clipgs_icp_vertex_normal_map.argtypes = [p, i64, i64, p, f64, p, p]
    lib.clipgs_icp_vertex_normal_map.restype = None
    lib.clipgs_icp_colour_equations.argtypes = [i64, *([p] * 6), i64, i64, *([p] * 4), f64, f64, p, p, p]
    lib.clipgs_icp_colour_equations.restype = None
    return lib


def compiled_available() -> bool:
    return _library() is not None


def vertex_normal_map(depth: np.ndarray, K: np.ndarray, max_jump: float = 0.05,
                      compiled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """depth: (H, W) metres, 0 = invalid -> (H, W, 3) points and (H, W, 3) normals, float64: ``vertex_map`` and
    ``normal_map``, through csrc/icp.cpp when it is available and ``compiled`` (one pass: ~0.4 ms at 160 x 120
    against ~4 ms in NumPy, twice per tracked frame)."""
    lib = _library() if compiled else None
    if lib is None:
        vertices = vertex_map(depth, K)
        return vertices, normal_map(vertices, max_jump)
    h, w = depth.shape
    depth = np.ascontiguousarray(depth, dtype=np.float64)
    K = np.ascontiguousarray(K, dtype=np.float64)
    vertices, normals = np.empty((h, w, 3)), np.empty((h, w, 3))
    lib.clipgs_icp_vertex_normal_map(depth.ctypes.data_as(ctypes.c_void_p), h, w,
                                     K.ctypes.data_as(ctypes.c_void_p), max_jump,
                                     vertices.ctypes.data_as(ctypes.c_void_p), normals.ctypes.data_as(ctypes.c_void_p))
    return vertices, normals


def _normal_equations_numpy(src: np.ndarray, src_n: np.ndarray, T: np.ndarray, M: np.ndarray, K: np.ndarray,
                            w: int, h: int, model_v: np.ndarray, model_n: np.ndarray, max_distance_m: float,
                            min_normal_cos: float, huber_m: float) -> tuple[np.ndarray, np.ndarray, int, float]:
    """One Gauss-Newton step's (A (6, 6), b (6,), pairs kept, sum of their squared residuals), the reference.

    src, src_n: (n, 3) frame points and normals; T (4, 4): frame -> predicted camera (the estimate); M (4, 4):
    predicted -> model camera; model_v, model_n: (h * w, 3) the model view's points and normals (zero: none).
    Frame points moved by M T are projected into the model view and paired with the point there; pairs further
    than ``max_distance_m`` or whose normals disagree are dropped, the rest Huber-weighted. The step is taken in
    the predicted camera."""
    MT = M @ T
    p = src @ MT[:3, :3].T + MT[:3, 3]  # in the model camera
    z = p[:, 2]
    front = z > 1e-6
    inv_z = 1.0 / np.where(front, z, 1.0)
    u = np.rint(K[0, 0] * p[:, 0] * inv_z + K[0, 2]).astype(np.int64)
    v = np.rint(K[1, 1] * p[:, 1] * inv_z + K[1, 2]).astype(np.int64)
    idx = np.flatnonzero(front & (u >= 0) & (u < w) & (v >= 0) & (v < h))
    pix = v[idx] * w + u[idx]
    paired = np.any(model_n[pix] != 0, axis=-1)
    idx, pix = idx[paired], pix[paired]
    q, n, pi = model_v[pix], model_n[pix], p[idx]
    d = pi - q
    r = np.einsum("ij,ij->i", d, n)
    agree = np.einsum("ij,ij->i", src_n[idx] @ MT[:3, :3].T, n) >= min_normal_cos  # 0 where the frame has none
    keep = (np.einsum("ij,ij->i", d, d) < max_distance_m**2) & agree
    idx, n, r = idx[keep], n[keep] @ M[:3, :3], r[keep]
    pi = src[idx] @ T[:3, :3].T + T[:3, 3]
    wgt = np.where(np.abs(r) <= huber_m, 1.0, huber_m / np.maximum(np.abs(r), 1e-12))
    J = np.concatenate([_cross(pi, n), n], axis=1)  # d r / d (omega, t) for p -> p + omega x p + t
    Jw = J * wgt[:, None]
    return Jw.T @ J, -Jw.T @ r, len(r), float(np.sum(r**2))


COLOUR_DEPTH_GAP_M = 0.05  # the colour term pairs a frame point with the model pixel it lands on when their depths
                          # agree this closely (else the pixel shows something in front of it or behind)
COLOUR_EDGE_MARGIN_PX = 2  # ... and leaves out model pixels this close to an occlusion edge (frame points: 1 closer)


def occlusion_edges(depth: np.ndarray, margin: int, max_jump: float = 0.05, gap: int = 2) -> np.ndarray:
    """depth (H, W) metres, 0 = invalid -> (H, W) bool: pixels within ``margin`` pixels (a square) of an occlusion
    edge: a jump between two valid 4-neighbours of more than ``max_jump`` x the larger depth (as
    :func:`normal_map` judges), or an invalid pixel with valid depths within ``gap`` pixels that differ by more
    than twice that (a structured-light sensor returns nothing on both sides of a jump). A dropout inside a
    surface, or the end of what the sensor reaches (a wall beyond its range), is no edge.

    Colour there mixes both surfaces (the image was resampled, and bilinear sampling and the image gradient
    reach across), and the two move apart with parallax: a colour pair across such an edge pulls the pose. On a
    doorway view of the apartment (realistic sensor) the keyframe ICP's colour term turned a pose that was right
    to 0.04 degrees by 0.5-0.7 degrees through these pixels; the drift that followed was most of the walk's
    keyframe error."""
    from scipy.ndimage import maximum_filter, minimum_filter

    z = np.asarray(depth, dtype=np.float64)
    edge = np.zeros(z.shape, dtype=bool)
    for a, b, pair in ((z[:, 1:], z[:, :-1], (np.s_[:, 1:], np.s_[:, :-1])), (z[1:], z[:-1], (np.s_[1:], np.s_[:-1]))):
        jump = (a > 0) & (b > 0) & (np.abs(a - b) > max_jump * np.maximum(a, b))
        edge[pair[0]] |= jump
        edge[pair[1]] |= jump
    window = {"size": 2 * gap + 1, "mode": "constant"}  # outside the image: no depth
    lo = minimum_filter(np.where(z > 0, z, np.inf), cval=np.inf, **window)  # the valid depths within gap pixels
    hi = maximum_filter(z, cval=0.0, **window)
    edge |= (z <= 0) & (hi > (1.0 + 2.0 * max_jump) * lo)
    return maximum_filter(edge, size=2 * margin + 1, mode="constant", cval=False) if margin > 0 else edge


def intensity(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 or [0, 1] colour -> (H, W) float64 luma in [0, 1] (Rec. 601 weights)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb @ np.array([0.299, 0.587, 0.114]) / (255.0 if rgb.max(initial=0.0) > 1.0 else 1.0)


def _image_gradients(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central differences along u and v, (H, W) each, 0 on the border."""
    gu, gv = np.zeros_like(image), np.zeros_like(image)
    gu[:, 1:-1] = (image[:, 2:] - image[:, :-2]) / 2
    gv[1:-1] = (image[2:] - image[:-2]) / 2
    return gu, gv


def _bilinear(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    u0, v0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    a, c = u - u0, v - v0
    return (image[v0, u0] * (1 - a) * (1 - c) + image[v0, u0 + 1] * a * (1 - c) + image[v0 + 1, u0] * (1 - a) * c
            + image[v0 + 1, u0 + 1] * a * c)


def _colour_equations_numpy(src, src_I, T, M, K, model_depth, model_I, grad_u, grad_v, max_depth_gap_m, huber):
    """The photometric term of coloured ICP (Park et al. 2017) for one step: (A (6, 6), b (6,), pairs, sum r^2).

    Frame points src (n, 3) with intensities src_I (n,), moved by M T into the model view and projected
    (continuous pixels); those inside [1, w - 2) x [1, h - 2) whose nearest model pixel's depth is within
    ``max_depth_gap_m`` of theirs pair with the bilinear model intensity. A gain g = sum I_model / sum I_frame
    over the pairs takes out an exposure change; r = I_model - g I_frame, Jacobian through the image gradient and
    the projection, in the predicted camera (as the point-to-plane term); Huber weights at ``huber``."""
    h, w = model_depth.shape
    MT = M @ T
    p = src @ MT[:3, :3].T + MT[:3, 3]
    z = p[:, 2]
    front = z > 1e-3
    u = K[0, 0] * p[:, 0] / np.where(front, z, 1.0) + K[0, 2]
    v = K[1, 1] * p[:, 1] / np.where(front, z, 1.0) + K[1, 2]
    idx = np.flatnonzero(front & (u >= 1) & (u < w - 2) & (v >= 1) & (v < h - 2))
    depth_there = model_depth[np.rint(v[idx]).astype(np.int64), np.rint(u[idx]).astype(np.int64)]
    idx = idx[(depth_there > 0) & (np.abs(depth_there - z[idx]) < max_depth_gap_m)]
    if len(idx) == 0:
        return np.zeros((6, 6)), np.zeros(6), 0, 0.0
    u, v, z, p = u[idx], v[idx], z[idx], p[idx]
    model = _bilinear(model_I, u, v)
    r = model - model.sum() / max(src_I[idx].sum(), 1e-6) * src_I[idx]
    gu, gv = _bilinear(grad_u, u, v), _bilinear(grad_v, u, v)
    dp = np.stack([gu * K[0, 0] / z, gv * K[1, 1] / z, -(gu * K[0, 0] * p[:, 0] + gv * K[1, 1] * p[:, 1]) / z**2], 1)
    g = dp @ M[:3, :3]  # d r / d (point in the predicted camera)
    pi = src[idx] @ T[:3, :3].T + T[:3, 3]
    J = np.concatenate([_cross(pi, g), g], axis=1)
    wgt = np.where(np.abs(r) <= huber, 1.0, huber / np.maximum(np.abs(r), 1e-12))
    Jw = J * wgt[:, None]
    return Jw.T @ J, -Jw.T @ r, len(r), float(np.sum(r**2))


def _colour_equations(src, src_I, T, M, K, model_depth, model_I, grad_u, grad_v, max_depth_gap_m, huber,
                      compiled: bool = True) -> tuple[np.ndarray, np.ndarray, int, float]:
    """:func:`_colour_equations_numpy`, through the compiled kernel when it is available and ``compiled``."""
    lib = _library() if compiled else None
    if lib is None:
        return _colour_equations_numpy(src, src_I, T, M, K, model_depth, model_I, grad_u, grad_v, max_depth_gap_m,
                                       huber)
    h, w = model_depth.shape
    arrays = [np.ascontiguousarray(a, dtype=np.float64) for a in (src, src_I, M @ T, M[:3, :3], T, K, model_depth,
                                                                 model_I, grad_u, grad_v)]
    A, b, stats = np.empty((6, 6)), np.empty(6), np.empty(2)
    ptr = [a.ctypes.data_as(ctypes.c_void_p) for a in arrays]
    lib.clipgs_icp_colour_equations(len(src), *ptr[:6], w, h, *ptr[6:], max_depth_gap_m, huber,
                                    *(x.ctypes.data_as(ctypes.c_void_p) for x in (A, b, stats)))
    return A, b, int(stats[0]), float(stats[1])


def _normal_equations(src, src_n, T, M, K, w, h, model_v, model_n, max_distance_m, min_normal_cos, huber_m,
                      compiled: bool = True) -> tuple[np.ndarray, np.ndarray, int, float]:
    """:func:`_normal_equations_numpy`, through the compiled kernel when it is available and ``compiled``."""
    lib = _library() if compiled else None
    if lib is None:
        return _normal_equations_numpy(src, src_n, T, M, K, w, h, model_v, model_n, max_distance_m,
                                       min_normal_cos, huber_m)
    arrays = [np.ascontiguousarray(a, dtype=np.float64) for a in (src, src_n, M @ T, M[:3, :3], T, K, model_v,
                                                                 model_n)]
    A, b, stats = np.empty((6, 6)), np.empty(6), np.empty(2)
    ptr = [a.ctypes.data_as(ctypes.c_void_p) for a in arrays]
    lib.clipgs_icp_normal_equations(len(src), *ptr[:6], w, h, *ptr[6:], max_distance_m**2, min_normal_cos, huber_m,
                                    *(x.ctypes.data_as(ctypes.c_void_p) for x in (A, b, stats)))
    return A, b, int(stats[0]), float(stats[1])


@dataclass
class ModelView:
    """One model depth view for :func:`icp_align_views`: depth (H, W) metres; valid (H, W) bool, the pixels whose
    surface is trusted; model_from_predicted (4, 4) rigid, from the predicted camera into this view's camera
    (None: the same camera); intensity (H, W) in [0, 1] (:func:`intensity`): its image, for the colour term
    (None: depth alone)."""

    depth: np.ndarray
    valid: np.ndarray
    model_from_predicted: np.ndarray | None = None
    intensity: np.ndarray | None = None


def icp_align(frame_depth: np.ndarray, model_depth: np.ndarray, model_valid: np.ndarray, K: np.ndarray, *,
              model_from_predicted: np.ndarray | None = None, **options) -> IcpResult:
    """Point-to-plane ICP of the frame's depth against one model depth view (e.g. rendered at the predicted pose).

    frame_depth: (H, W) metres, 0 = invalid (the new frame); model_depth: (H, W) metres; model_valid: (H, W) bool,
    pixels whose surface is trusted (e.g. opacity >= 0.95); K: (3, 3) intrinsics of both.
    ``model_from_predicted`` (4, 4): where the model's camera is not the predicted one (e.g. the last keyframe's
    depth as the model), the rigid transform from the predicted camera into it. Options as
    :func:`icp_align_views`.
    """
    return icp_align_views(frame_depth, [ModelView(model_depth, model_valid, model_from_predicted)], K, **options)


def icp_align_views(frame_depth: np.ndarray, views: Sequence[ModelView], K: np.ndarray, *, iterations: int = 12,
                    max_distance_m: float = 0.1, min_normal_cos: float = 0.8, huber_m: float = 0.01,
                    damping: float = 1e-3, pixel_stride: int = 1, min_inliers: float = 0.3,
                    tolerance: float = 1e-5, compiled: bool = True, frame_intensity: np.ndarray | None = None,
                    colour_weight: float = 0.0, colour_huber: float = 0.05) -> IcpResult:
    """Point-to-plane ICP of the frame's depth against one or several model views at once: each step pairs the
    frame's points with every view (projective association in each) and solves the summed normal equations, so
    the pose agrees with all of them; one view's sensor noise and its own pose error are averaged out.

    Frame points are taken every ``pixel_stride`` pixels. ``damping`` (relative to the mean diagonal of the
    normal equations) pulls unconstrained directions to no motion. A view where fewer than ``min_inliers`` of
    the frame's valid points pair up leaves the solve for good; ``ok`` is False when no view is left (the
    result should then not be used). ``inliers`` is the mean share over the views still paired. compiled: the
    point and normal maps and the normal equations through csrc/icp.cpp when it builds here (False: the NumPy
    reference).

    Coloured ICP: with ``frame_intensity`` (H, W) and ``colour_weight`` > 0, every view that has an intensity
    image adds the photometric term (:func:`_colour_equations_numpy`) times ``colour_weight`` (intensity is in
    [0, 1], depth residuals in metres: 0.03 weighs a 0.06 intensity error like a 1 cm one). Depth leaves motion
    along planes free (a table top, the floor and a wall); the texture on them pins it. Model pixels within
    ``COLOUR_EDGE_MARGIN_PX`` of an occlusion edge (:func:`occlusion_edges`), and frame points within one pixel
    less, stay out of the colour term.
    """
    frame_v, frame_n = vertex_normal_map(frame_depth, K, compiled=compiled)
    src = frame_v[::pixel_stride, ::pixel_stride].reshape(-1, 3)
    src_n = frame_n[::pixel_stride, ::pixel_stride].reshape(-1, 3)
    valid = src[:, 2] > 0
    src, src_n = src[valid], src_n[valid]
    use_colour = colour_weight > 0 and frame_intensity is not None
    src_c = src_I = None  # the colour term's frame points and intensities: away from occlusion edges
    if use_colour:
        away = ~occlusion_edges(frame_depth, COLOUR_EDGE_MARGIN_PX - 1)[::pixel_stride, ::pixel_stride]
        away = away.reshape(-1)[valid]
        src_c, src_I = src[away], frame_intensity[::pixel_stride, ::pixel_stride].reshape(-1)[valid][away]
    T = np.eye(4)
    nan = float("nan")
    result = IcpResult(T, 0.0, nan, nan, 0, False, False)
    if len(src) < 6 or not views:
        return result
    models = []
    for view in views:
        h, w = view.depth.shape
        depth = np.where(view.valid, view.depth, 0.0)
        model_v, model_n = vertex_normal_map(depth, K, compiled=compiled)
        M = np.eye(4) if view.model_from_predicted is None else view.model_from_predicted
        colour = None
        if use_colour and view.intensity is not None:
            image = np.asarray(view.intensity, dtype=np.float64)
            colour_depth = np.where(occlusion_edges(depth, COLOUR_EDGE_MARGIN_PX), 0.0, depth)
            colour = (np.asarray(colour_depth, dtype=np.float64), image, *_image_gradients(image))
        models.append((model_v.reshape(-1, 3), model_n.reshape(-1, 3), M, w, h, colour))  # flat: one gather a pair
    for it in range(1, iterations + 1):
        A, b, kept, sum_r2, paired, best_share = np.zeros((6, 6)), np.zeros(6), 0, 0.0, [], 0.0
        for model in models:
            model_v, model_n, M, w, h, colour = model
            A_v, b_v, kept_v, r2_v = _normal_equations(src, src_n, T, M, K, w, h, model_v, model_n, max_distance_m,
                                                       min_normal_cos, huber_m, compiled)
            best_share = max(best_share, kept_v / len(src))
            if kept_v < 6 or kept_v / len(src) < min_inliers:
                continue
            A, b, kept, sum_r2 = A + A_v, b + b_v, kept + kept_v, sum_r2 + r2_v
            if colour is not None:
                A_c, b_c, _, _ = _colour_equations(src_c, src_I, T, M, K, *colour, COLOUR_DEPTH_GAP_M,
                                                   colour_huber, compiled)
                A, b = A + colour_weight * A_c, b + colour_weight * b_c
            paired.append(model)
        if not paired:
            return IcpResult(T, best_share, nan, result.rmse_before_m, it, False, False)
        share = kept / (len(src) * len(paired))
        models = paired
        A += damping * np.trace(A) / 6 * np.eye(6)
        xi = np.linalg.solve(A, b)
        T = _skew_exp(xi) @ T
        rmse = float(np.sqrt(sum_r2 / kept))
        result = IcpResult(T, share, rmse, rmse if it == 1 else result.rmse_before_m, it, False, True)
        if np.linalg.norm(xi) < tolerance:
            result.converged = True
            break
    return result
