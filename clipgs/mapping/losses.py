"""Photometric and geometric losses for mapping."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _gaussian_window(size: int, sigma: float, channels: int, dtype, device) -> Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean structural similarity of two (H, W, C) images in [0, 1] (Gaussian window, as in 3DGS)."""
    x, y = a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None]
    C = x.shape[1]
    w = _gaussian_window(window, sigma, C, a.dtype, a.device)
    pad = window // 2
    mu_x, mu_y = F.conv2d(x, w, padding=pad, groups=C), F.conv2d(y, w, padding=pad, groups=C)
    sxx = F.conv2d(x * x, w, padding=pad, groups=C) - mu_x**2
    syy = F.conv2d(y * y, w, padding=pad, groups=C) - mu_y**2
    sxy = F.conv2d(x * y, w, padding=pad, groups=C) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).mean()


def depth_l1(rendered_depth: Tensor, observed: Tensor) -> Tensor:
    """Mean |rendered - observed| over valid observed pixels (> 0). rendered_depth: accumulated (H, W)."""
    valid = observed > 0
    if not bool(valid.any()):
        return rendered_depth.sum() * 0.0
    return (rendered_depth - observed).abs()[valid].mean()


def mapping_loss(rgb: Tensor, depth: Tensor, target_rgb: Tensor, target_depth: Tensor, w_color: float,
                 w_ssim: float, w_depth: float) -> tuple[Tensor, dict[str, float]]:
    """Weighted L1 colour + (1 - SSIM) + L1 depth. rgb/target_rgb (H, W, 3) in [0, 1]; depths (H, W) metres.

    ``depth`` is the accumulated depth (sum of w_i z_i), so matching it also drives coverage (alpha) to 1.
    """
    l1 = (rgb - target_rgb).abs().mean()
    loss = w_color * (1 - w_ssim) * l1
    parts = {"l1": float(l1.detach())}
    if w_ssim > 0:
        s = ssim(rgb, target_rgb)
        loss = loss + w_color * w_ssim * (1 - s)
        parts["ssim"] = float(s.detach())
    if w_depth > 0:
        d = depth_l1(depth, target_depth)
        loss = loss + w_depth * d
        parts["depth_l1"] = float(d.detach())
    return loss, parts
