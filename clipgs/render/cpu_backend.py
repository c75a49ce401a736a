"""The compiled CPU backend: PyTorch projection and binning, C++ compositing with a hand-written backward."""
from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from clipgs.render.cpu_kernel import load
from clipgs.render.projection import Projected
from clipgs.render.torch_backend import TILE, bin_tiles


def _ptr(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, feats, radii, ids, tile_start, tile_count, width, height, tiles_x,
                tiles_y):
        lib = load()
        suffix = "f64" if feats.dtype == torch.float64 else "f32"
        n_pix = width * height
        C = feats.shape[1]
        out = torch.empty(height, width, C, dtype=feats.dtype)
        alpha = torch.empty(height, width, dtype=feats.dtype)
        final_T = torch.empty(n_pix, dtype=feats.dtype)
        last = torch.empty(n_pix, dtype=torch.int32)
        scene = (_ptr(means2d), _ptr(conics), _ptr(opacities), _ptr(feats), _ptr(radii), _ptr(ids), _ptr(tile_start),
                 _ptr(tile_count), C, width, height, tiles_x, tiles_y, TILE)
        getattr(lib, f"clipgs_forward_{suffix}")(*scene, _ptr(out), _ptr(alpha), _ptr(final_T), _ptr(last),
                                                 torch.get_num_threads())
        ctx.save_for_backward(means2d, conics, opacities, feats, radii, ids, tile_start, tile_count, final_T, last)
        ctx.dims = (width, height, tiles_x, tiles_y)
        return out, alpha

    @staticmethod
    def backward(ctx, g_out, g_alpha):
        means2d, conics, opacities, feats, radii, ids, tile_start, tile_count, final_T, last = ctx.saved_tensors
        width, height, tiles_x, tiles_y = ctx.dims
        lib = load()
        suffix = "f64" if feats.dtype == torch.float64 else "f32"
        M, C, dt = ids.numel(), feats.shape[1], feats.dtype
        g_out = (g_out if g_out is not None else torch.zeros(height, width, C, dtype=dt)).contiguous()
        g_alpha = (g_alpha if g_alpha is not None else torch.zeros(height, width, dtype=dt)).contiguous()
        e_means = torch.empty(M, 2, dtype=dt)
        e_conics = torch.empty(M, 3, dtype=dt)
        e_opac = torch.empty(M, dtype=dt)
        e_feats = torch.empty(M, C, dtype=dt)
        scene = (_ptr(means2d), _ptr(conics), _ptr(opacities), _ptr(feats), _ptr(radii), _ptr(ids), _ptr(tile_start),
                 _ptr(tile_count), C, width, height, tiles_x, tiles_y, TILE)
        getattr(lib, f"clipgs_backward_{suffix}")(*scene, _ptr(final_T), _ptr(last), _ptr(g_out), _ptr(g_alpha),
                                                  _ptr(e_means), _ptr(e_conics), _ptr(e_opac), _ptr(e_feats),
                                                  torch.get_num_threads())
        n = means2d.shape[0]
        grads = [torch.zeros(n, 2, dtype=dt).index_add_(0, ids, e_means),
                 torch.zeros(n, 3, dtype=dt).index_add_(0, ids, e_conics),
                 torch.zeros(n, dtype=dt).index_add_(0, ids, e_opac),
                 torch.zeros(n, C, dtype=dt).index_add_(0, ids, e_feats)]
        return (*grads, None, None, None, None, None, None, None, None)


def project_cpu(means: Tensor, quats: Tensor, log_scales: Tensor, opacities: Tensor, viewmat: Tensor, K: Tensor,
                width: int, height: int, near: float = 0.01, far: float = 1e10, eps2d: float = 0.3) -> Projected:
    """Compiled, gradient-free twin of :func:`clipgs.render.projection.project_gaussians` (same arguments)."""
    lib = load()
    dtype = means.dtype if means.dtype in (torch.float32, torch.float64) else torch.float32
    suffix = "f64" if dtype == torch.float64 else "f32"
    n = means.shape[0]
    args = [t.detach().to(dtype).contiguous() for t in (means, quats, log_scales, opacities, viewmat, K)]
    means2d, conics = torch.empty(n, 2, dtype=dtype), torch.empty(n, 3, dtype=dtype)
    depths, radii = torch.empty(n, dtype=dtype), torch.empty(n, 2, dtype=torch.int32)
    getattr(lib, f"clipgs_project_{suffix}")(n, *map(_ptr, args), width, height, near, far, eps2d, _ptr(means2d),
                                             _ptr(conics), _ptr(depths), _ptr(radii), torch.get_num_threads())
    return Projected(means2d=means2d, conics=conics, depths=depths, opacities=args[3], radii=radii)


def composite_cpu(proj: Projected, features: Tensor, width: int, height: int) -> tuple[Tensor, Tensor, Tensor]:
    """Same contract as :func:`clipgs.render.torch_backend.composite`, computed by the compiled kernel.

    features: (N, C) float32 or float64 on the CPU. Returns image (H, W, C), accumulated depth (H, W), alpha (H, W).
    """
    if features.device.type != "cpu":
        raise ValueError("the compiled CPU backend needs CPU tensors")
    dtype = features.dtype if features.dtype in (torch.float32, torch.float64) else torch.float32
    C = features.shape[1]
    feats = torch.cat([features, proj.depths[:, None]], dim=-1).to(dtype).contiguous()
    ids, tile_start, tile_count, tiles_x, tiles_y = bin_tiles(proj, width, height, TILE)
    out, alpha = _Composite.apply(
        proj.means2d.to(dtype).contiguous(), proj.conics.to(dtype).contiguous(), proj.opacities.to(dtype).contiguous(),
        feats, proj.radii.contiguous(), ids.contiguous(), tile_start.contiguous(), tile_count.contiguous(),
        width, height, tiles_x, tiles_y,
    )
    return out[..., :C], out[..., C], alpha
