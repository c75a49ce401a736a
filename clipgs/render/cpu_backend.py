"""The compiled CPU backend: C++ projection, tile binning and compositing (hand-written backwards).

Compositing has two kernels: the vectorised float32 one (a SIMD vector per 8-pixel row segment; the forward
composites each segment on its own until its pixels saturate; fast exp; the default) and the scalar one
(float64, and float32 as backend ``cpu_scalar`` for comparison). The float32 projection runs eight Gaussians
per SIMD vector. :func:`render_cpu` is a whole render without gradients in one call.
"""
from __future__ import annotations

import ctypes
from collections.abc import Sequence

import torch
from torch import Tensor

from clipgs.render.cpu_kernel import load
from clipgs.render.occlusion import Occluder
from clipgs.render.projection import Projected
from clipgs.render.torch_backend import TILE

FEATURES_ONLY = 2  # the backward's mode when only the features want gradients (kFeaturesOnly in the kernel)


def _ptr(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _suffix(dtype: torch.dtype) -> str:
    return "f64" if dtype == torch.float64 else "f32"


def _kernel_suffix(dtype: torch.dtype, vectorised: bool) -> str:
    """'simd_f32' (vectorised float32), 'f32' (scalar float32) or 'f64' (scalar float64)."""
    return "simd_f32" if _suffix(dtype) == "f32" and vectorised and TILE == 16 else _suffix(dtype)


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, feats, radii, ids, tile_start, tile_count, width, height, tiles_x,
                tiles_y, vectorised, need, attributes_move_geometry):
        lib = load()
        suffix = _kernel_suffix(feats.dtype, vectorised)
        n_pix = width * height
        C = feats.shape[1]
        out = torch.empty(height, width, C, dtype=feats.dtype)
        alpha = torch.empty(height, width, dtype=feats.dtype)
        final_T = torch.empty(n_pix, dtype=feats.dtype)
        last = torch.empty(n_pix, dtype=torch.int32)
        scene = (_ptr(means2d), _ptr(conics), _ptr(opacities), _ptr(feats), _ptr(radii), _ptr(ids), _ptr(tile_start),
                 _ptr(tile_count), C, width, height, tiles_x, tiles_y, TILE)
        wanted = () if suffix != "simd_f32" else (None if need is None else _ptr(need),)  # scalar: every pixel
        getattr(lib, f"clipgs_forward_{suffix}")(*scene, *wanted, _ptr(out), _ptr(alpha), _ptr(final_T), _ptr(last),
                                                 torch.get_num_threads())
        ctx.save_for_backward(means2d, conics, opacities, feats, radii, ids, tile_start, tile_count, final_T, last)
        ctx.dims = (width, height, tiles_x, tiles_y)
        ctx.suffix, ctx.attributes_move_geometry = suffix, int(attributes_move_geometry)
        # Features and depth as separate outputs: slicing them off afterwards would give each a backward that
        # zero-fills a whole (H, W, C) buffer (at 640x480 a fresh 25 MB allocation, page faults included).
        return out[..., 1:], out[..., 0], alpha

    @staticmethod
    def backward(ctx, g_image, g_depth, g_alpha):
        means2d, conics, opacities, feats, radii, ids, tile_start, tile_count, final_T, last = ctx.saved_tensors
        width, height, tiles_x, tiles_y = ctx.dims
        lib, suffix = load(), ctx.suffix
        M, C, dt = ids.numel(), feats.shape[1], feats.dtype
        g_out = torch.empty(height, width, C, dtype=dt)  # the kernel's layout: depth, then the features
        g_out[..., 0] = 0.0 if g_depth is None else g_depth
        g_out[..., 1:] = 0.0 if g_image is None else g_image
        g_alpha = (g_alpha if g_alpha is not None else torch.zeros(height, width, dtype=dt)).contiguous()
        e_means = torch.empty(M, 2, dtype=dt)
        e_conics = torch.empty(M, 3, dtype=dt)
        e_opac = torch.empty(M, dtype=dt)
        e_feats = torch.empty(M, C, dtype=dt)
        scene = (_ptr(means2d), _ptr(conics), _ptr(opacities), _ptr(feats), _ptr(radii), _ptr(ids), _ptr(tile_start),
                 _ptr(tile_count), C, width, height, tiles_x, tiles_y, TILE)
        # No gradient wanted for the geometry (a step that trains the features alone, a splat onto the Gaussians):
        # the vectorised kernel then computes the features' gradients only, the same values, its geometry's 0.
        mode = ctx.attributes_move_geometry if any(ctx.needs_input_grad[:3]) else FEATURES_ONLY
        getattr(lib, f"clipgs_backward_{suffix}")(*scene, _ptr(final_T), _ptr(last), _ptr(g_out), _ptr(g_alpha),
                                                  _ptr(e_means), _ptr(e_conics), _ptr(e_opac), _ptr(e_feats),
                                                  mode, torch.get_num_threads())
        n = means2d.shape[0]
        grads = [torch.empty(n, 2, dtype=dt), torch.empty(n, 3, dtype=dt), torch.empty(n, dtype=dt),
                 torch.empty(n, C, dtype=dt)]
        getattr(lib, f"clipgs_sum_by_gaussian_{_suffix(dt)}")(M, n, C, _ptr(ids), *map(_ptr, (e_means, e_conics, e_opac,
                                                                                              e_feats)),
                                                             *map(_ptr, grads), torch.get_num_threads())
        return (*grads, *([None] * 11))


class _Project(torch.autograd.Function):
    """EWA projection with a hand-written backward to means, quats and log-scales."""

    @staticmethod
    def forward(ctx, means, quats, log_scales, opacities, viewmat, K, width, height, near, far, eps2d):
        lib, suffix, n = load(), _suffix(means.dtype), means.shape[0]
        means2d, conics = torch.empty(n, 2, dtype=means.dtype), torch.empty(n, 3, dtype=means.dtype)
        depths, radii = torch.empty(n, dtype=means.dtype), torch.empty(n, 2, dtype=torch.int32)
        getattr(lib, f"clipgs_project_{suffix}")(n, *map(_ptr, (means, quats, log_scales, opacities, viewmat, K)),
                                                 width, height, near, far, eps2d, _ptr(means2d), _ptr(conics),
                                                 _ptr(depths), _ptr(radii), torch.get_num_threads())
        ctx.save_for_backward(means, quats, log_scales, viewmat, K, radii)
        ctx.dims = (width, height, eps2d)
        ctx.mark_non_differentiable(radii)
        return means2d, conics, depths, radii

    @staticmethod
    def backward(ctx, g_means2d, g_conics, g_depths, _g_radii):
        means, quats, log_scales, viewmat, K, radii = ctx.saved_tensors
        width, height, eps2d = ctx.dims
        n, dt = means.shape[0], means.dtype
        grads_in = [(g if g is not None else torch.zeros(shape, dtype=dt)).contiguous()
                    for g, shape in ((g_means2d, (n, 2)), (g_conics, (n, 3)), (g_depths, (n,)))]
        g_means, g_quats, g_scales = (torch.empty(n, k, dtype=dt) for k in (3, 4, 3))
        getattr(load(), f"clipgs_project_backward_{_suffix(dt)}")(
            n, *map(_ptr, (means, quats, log_scales, viewmat, K)), width, height, eps2d, _ptr(radii),
            *map(_ptr, grads_in), _ptr(g_means), _ptr(g_quats), _ptr(g_scales), torch.get_num_threads())
        return g_means, g_quats, g_scales, None, None, None, None, None, None, None, None


def project_cpu(means: Tensor, quats: Tensor, log_scales: Tensor, opacities: Tensor, viewmat: Tensor, K: Tensor,
                width: int, height: int, near: float = 0.01, far: float = 1e10, eps2d: float = 0.3) -> Projected:
    """Compiled twin of :func:`clipgs.render.projection.project_gaussians` (same arguments), differentiable.

    Gradients flow to means, quats and log_scales through a hand-written backward; ``opacities`` is passed
    through as given (its gradient comes from compositing).
    """
    dtype = means.dtype if means.dtype in (torch.float32, torch.float64) else torch.float32
    args = [t.to(dtype).contiguous() for t in (means, quats, log_scales)]
    fixed = [t.detach().to(dtype).contiguous() for t in (opacities, viewmat, K)]
    means2d, conics, depths, radii = _Project.apply(*args, *fixed, width, height, near, far, eps2d)
    return Projected(means2d=means2d, conics=conics, depths=depths, opacities=opacities.to(dtype), radii=radii)


def cull_cpu(means: Tensor, log_scales: Tensor, opacities: Tensor, viewmat: Tensor, K: Tensor, width: int, height: int,
             near: float = 0.01, far: float = 1e10, eps2d: float = 0.3, occluder: Occluder | None = None) -> Tensor:
    """(N,) bool: the projection's cheap cull alone, a superset of the Gaussians it gives a footprint, less those
    ``occluder`` hides (compiled twin of the PyTorch formula in :func:`clipgs.render.api.maybe_in_view`)."""
    dtype = means.dtype if means.dtype in (torch.float32, torch.float64) else torch.float32
    args = [t.detach().to(dtype).contiguous() for t in (means, log_scales, opacities, viewmat, K)]
    keep = torch.empty(means.shape[0], dtype=torch.uint8)
    hidden_by = (None, 0, 0.0)
    if occluder is not None:
        far_image = occluder.far.detach().to(dtype).contiguous()
        hidden_by = (_ptr(far_image), occluder.radius_px, occluder.margin_m)
    getattr(load(), f"clipgs_cull_{_suffix(dtype)}")(means.shape[0], *map(_ptr, args), width, height, near, far, eps2d,
                                                     *hidden_by, _ptr(keep), torch.get_num_threads())
    return keep.bool()


def bin_tiles_cpu(proj: Projected, width: int, height: int, tile: int = TILE):
    """Compiled twin of :func:`clipgs.render.torch_backend.bin_tiles` (same outputs, same order)."""
    lib, suffix = load(), _suffix(proj.means2d.dtype)
    tiles_x, tiles_y = (width + tile - 1) // tile, (height + tile - 1) // tile
    n = proj.means2d.shape[0]
    means2d, depths = proj.means2d.detach().contiguous(), proj.depths.detach().contiguous()
    radii = proj.radii.contiguous()
    count = torch.empty(tiles_x * tiles_y, dtype=torch.int64)
    fn = getattr(lib, f"clipgs_bin_tiles_{suffix}")
    fn(n, _ptr(means2d), _ptr(radii), _ptr(depths), tiles_x, tiles_y, tile, _ptr(count), None, None,
       torch.get_num_threads())
    start = torch.cumsum(count, 0) - count
    ids = torch.empty(int(count.sum()), dtype=torch.int64)
    fn(n, _ptr(means2d), _ptr(radii), _ptr(depths), tiles_x, tiles_y, tile, _ptr(count), _ptr(start), _ptr(ids),
       torch.get_num_threads())
    return ids, start, count, tiles_x, tiles_y


def _wanted_pixels(attribute_pixels: Tensor | None, width: int, height: int) -> Tensor | None:
    """(H * W,) uint8, 1 at the flat pixel indices ``attribute_pixels`` (the kernels' ``need``); None for all."""
    if attribute_pixels is None:
        return None
    need = torch.zeros(height * width, dtype=torch.uint8)
    need[attribute_pixels.to(torch.long)] = 1
    return need


def composite_cpu(proj: Projected, features: Tensor | Sequence[Tensor], width: int, height: int,
                  vectorised: bool = True,
                  attribute_pixels: Tensor | None = None,
                  attributes_move_geometry: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Same contract as :func:`clipgs.render.torch_backend.composite`, computed by the compiled kernel.

    features: (N, C) float32 or float64 on the CPU, or (N, C_i) parts composited as their concatenation along
        channels. Returns image (H, W, C), accumulated depth (H, W), alpha (H, W).
    vectorised: float32 through the SIMD kernel (alpha by a fast 2^y, relative error <= 3e-6); False: the scalar one.
    attribute_pixels: (P,) flat row-major pixel indices where the channels after the first three are wanted
        (the vectorised kernel composites them only in the 8-pixel row segments holding one, 0 elsewhere).
    attributes_move_geometry: False keeps the gradients of the channels after the first three out of the
        geometry's (they reach those features only), as :func:`clipgs.render.rasterize` documents.
    """
    parts = list(features) if isinstance(features, (tuple, list)) else [features]
    if any(t.device.type != "cpu" for t in parts):
        raise ValueError("the compiled CPU backend needs CPU tensors")
    dtype = parts[0].dtype if parts[0].dtype in (torch.float32, torch.float64) else torch.float32
    # Depth first, then the features (colour leading): the vectorised backward always composites the first four
    # channels and the rest only in pixel segments whose gradient there is non-zero (sampled semantic pixels).
    feats = torch.cat([proj.depths[:, None].to(dtype), *(t.to(dtype) for t in parts)], dim=-1).contiguous()
    ids, tile_start, tile_count, tiles_x, tiles_y = bin_tiles_cpu(proj, width, height, TILE)
    need = _wanted_pixels(attribute_pixels, width, height)
    image, depth, alpha = _Composite.apply(
        proj.means2d.to(dtype).contiguous(), proj.conics.to(dtype).contiguous(), proj.opacities.to(dtype).contiguous(),
        feats, proj.radii.contiguous(), ids.contiguous(), tile_start.contiguous(), tile_count.contiguous(),
        width, height, tiles_x, tiles_y, vectorised, need, attributes_move_geometry,
    )
    return image, depth, alpha


def render_cpu(means: Tensor, quats: Tensor, log_scales: Tensor, opacities: Tensor, viewmat: Tensor, K: Tensor,
               width: int, height: int, parts: Sequence[Tensor], near: float = 0.01, far: float = 1e10,
               eps2d: float = 0.3, attribute_pixels: Tensor | None = None
               ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """A float32 render without gradients in one compiled call: projection (its cull first), the Gaussians with
    a footprint gathered with their features, binning and vectorised compositing. The same image, bit for bit,
    as :func:`project_cpu` + :func:`composite_cpu` on the whole map, without their copies of it.

    parts: (N, C_i) feature arrays, composited as if concatenated along channels (no copy of the whole map).
    attribute_pixels: as :func:`composite_cpu` (channels after the first three wanted only there).
    Returns image (H, W, sum C_i), depth (H, W), alpha (H, W), radii (N, 2) int32 and means2d (N, 2) in OpenCV
    pixels (0 where radii are 0).
    """
    n, f32 = means.shape[0], torch.float32
    geometry = [t.detach().to(f32).contiguous() for t in (means, quats, log_scales, opacities, viewmat, K)]
    parts = [t.detach().to(f32).contiguous() for t in parts if t.shape[1] > 0]
    channels = 1 + sum(t.shape[1] for t in parts)
    out = torch.empty(height, width, channels, dtype=f32)
    alpha = torch.empty(height, width, dtype=f32)
    means2d, radii = torch.empty(n, 2, dtype=f32), torch.empty(n, 2, dtype=torch.int32)
    need = _wanted_pixels(attribute_pixels, width, height)
    part_ptrs = (ctypes.c_void_p * max(1, len(parts)))(*[t.data_ptr() for t in parts])
    part_channels = (ctypes.c_int64 * max(1, len(parts)))(*[t.shape[1] for t in parts])
    load().clipgs_render_simd_f32(n, *map(_ptr, geometry), width, height, near, far, eps2d, len(parts),
                                  ctypes.cast(part_ptrs, ctypes.c_void_p), ctypes.cast(part_channels, ctypes.c_void_p),
                                  None if need is None else _ptr(need), _ptr(means2d), _ptr(radii), _ptr(out),
                                  _ptr(alpha), torch.get_num_threads())
    return out[..., 1:], out[..., 0], alpha, radii, means2d
