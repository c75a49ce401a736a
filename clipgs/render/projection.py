"""EWA projection of 3D Gaussians to the image plane (pure PyTorch, differentiable, any dtype).

Numerically the same model as gsplat's pinhole ``fully_fused_projection`` (classic mode): the Jacobian
uses the mean clamped to 1.3x the field of view, ``eps2d`` is added to the 2D covariance, and the
bounding radius is opacity-aware (``min(3.33, sqrt(2 ln(255 opacity)))`` standard deviations), so a
Gaussian contributes nothing (alpha < 1/255) outside its box.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_EXTENT_SIGMAS = 3.33


@dataclass
class Projected:
    """Per-Gaussian screen-space quantities for one camera (N Gaussians).

    means2d: (N, 2) pixel coordinates (pixel centres at +0.5, gsplat convention).
    conics: (N, 3) upper triangle (a, b, c) of the inverse 2D covariance.
    depths: (N,) camera-frame z, metres.
    opacities: (N,) in (0, 1).
    radii: (N, 2) int32 half-extent of the bounding box in pixels; (0, 0) = culled.
    """

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    opacities: Tensor
    radii: Tensor

    @property
    def visible(self) -> Tensor:
        """(N,) bool: the Gaussian can touch at least one pixel."""
        return (self.radii > 0).any(dim=-1)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """(N, 4) quaternions (w, x, y, z), any non-zero norm -> (N, 3, 3) rotations."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return R.reshape((*q.shape[:-1], 3, 3))


def covariance_3d(quats: Tensor, log_scales: Tensor) -> Tensor:
    """World covariances (N, 3, 3) = R S S^T R^T from quats (N, 4) and log-scales (N, 3)."""
    M = quat_to_rotmat(quats) * torch.exp(log_scales)[:, None, :]
    return M @ M.transpose(-1, -2)


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    log_scales: Tensor,
    opacities: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
) -> Projected:
    """Project N Gaussians into one camera.

    means: (N, 3) world metres; quats: (N, 4) (w, x, y, z); log_scales: (N, 3); opacities: (N,) in [0, 1].
    viewmat: (4, 4) camera_from_world. K: (3, 3) intrinsics in gsplat's convention (pixel centres at +0.5).
    """
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    means_c = means @ R.T + t
    cov_c = R @ covariance_3d(quats, log_scales) @ R.T
    tx, ty, tz = means_c.unbind(-1)
    in_depth = (tz > near) & (tz < far)
    # Culled Gaussians get a harmless z so no inf/nan enters the graph (0 * inf would poison gradients).
    tz = torch.where(in_depth, tz, torch.ones_like(tz))

    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    txc = tz * torch.clamp(tx / tz, min=-lim_x_neg, max=lim_x_pos)
    tyc = tz * torch.clamp(ty / tz, min=-lim_y_neg, max=lim_y_pos)

    zero = torch.zeros_like(tz)
    J = torch.stack([fx / tz, zero, -fx * txc / (tz * tz), zero, fy / tz, -fy * tyc / (tz * tz)], dim=-1)
    J = J.reshape(-1, 2, 3)
    cov2d = J @ cov_c @ J.transpose(-1, -2)
    a = cov2d[:, 0, 0] + eps2d
    b = 0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0])
    c = cov2d[:, 1, 1] + eps2d
    det = a * c - b * b
    ok_det = det > 0
    det_safe = torch.where(ok_det, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    means2d = torch.stack([fx * tx / tz + cx, fy * ty / tz + cy], dim=-1)

    with torch.no_grad():
        opac_ok = opacities >= ALPHA_THRESHOLD
        ratio = torch.where(opac_ok, opacities / ALPHA_THRESHOLD, torch.ones_like(opacities))
        extent = torch.clamp(torch.sqrt(2.0 * torch.log(ratio)), max=MAX_EXTENT_SIGMAS)
        rx = torch.ceil(extent * torch.sqrt(a.clamp(min=0)))
        ry = torch.ceil(extent * torch.sqrt(c.clamp(min=0)))
        mx, my = means2d[:, 0], means2d[:, 1]
        inside = (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        keep = in_depth & ok_det & opac_ok & inside & ((rx > 0) | (ry > 0))
        radii = torch.stack([rx, ry], dim=-1).to(torch.int32) * keep[:, None]
    return Projected(means2d=means2d, conics=conics, depths=means_c[:, 2], opacities=opacities, radii=radii)
