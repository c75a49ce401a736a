"""gsplat (CUDA) backend. gsplat is imported lazily: on a machine without CUDA it is never touched."""
from __future__ import annotations

import torch
from torch import Tensor


def gsplat_available() -> bool:
    """True when CUDA is usable and gsplat imports."""
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    features: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    near: float,
    far: float,
    eps2d: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One camera through ``gsplat.rasterization`` (classic mode, RGB+D).

    Inputs as in :func:`clipgs.render.rasterize` (scales and opacities already activated, K in gsplat's
    convention). Returns image (H, W, C), accumulated depth (H, W), alpha (H, W), radii (N, 2), means2d (N, 2).
    """
    if not torch.cuda.is_available() or means.device.type != "cuda":
        raise RuntimeError("the gsplat backend needs CUDA tensors on a machine with a CUDA GPU")
    from gsplat import rasterization

    C = features.shape[1]
    renders, alphas, meta = rasterization(
        means, quats, scales, opacities, features,
        viewmats=viewmat[None], Ks=K[None], width=width, height=height,
        near_plane=near, far_plane=far, eps2d=eps2d, packed=False,
        render_mode="RGB+D", rasterize_mode="classic",
    )
    radii = meta["radii"][0]
    if radii.dim() == 1:  # older gsplat: one isotropic radius per Gaussian
        radii = radii[:, None].expand(-1, 2)
    return renders[0, ..., :C], renders[0, ..., C], alphas[0, ..., 0], radii.to(torch.int32), meta["means2d"][0]
