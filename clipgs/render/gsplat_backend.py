"""gsplat (CUDA) backend. gsplat is imported lazily: on a machine without CUDA it is never touched."""
from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor


@functools.cache
def gsplat_available() -> bool:
    """True when CUDA is usable, gsplat imports and its CUDA extension loads.

    gsplat compiles its extension on first use (minutes, needs nvcc); a failed or impossible build leaves
    ``_C`` unset, and the renderer then falls back to the PyTorch backend with one warning instead of failing
    at the first frame. Cached: the answer does not change within a process.
    """
    if not torch.cuda.is_available():
        return False
    try:
        from gsplat.cuda._backend import _C
    except ImportError:
        return False
    except Exception as exc:  # a broken JIT build raises whatever the compiler wrapper raises
        warnings.warn(f"gsplat is installed but its CUDA extension failed to build ({exc}); using the torch backend",
                      stacklevel=2)
        return False
    if _C is None:
        warnings.warn("gsplat is installed but its CUDA extension is unavailable (no CUDA toolkit?); "
                      "using the torch backend", stacklevel=2)
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
