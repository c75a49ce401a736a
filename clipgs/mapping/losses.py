"""Photometric and geometric losses for mapping."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from clipgs.mapping import fused_ssim


def _gaussian_taps(size: int, sigma: float, dtype, device) -> Tensor:
    """(size,) normalised 1D Gaussian; the 2D SSIM window is its outer product."""
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean structural similarity of two (H, W, C) images in [0, 1] (Gaussian window, zero padding, as in 3DGS).

    On the CPU, with no gradient wanted for ``b`` (the observed image), the compiled fused kernel
    (:mod:`clipgs.mapping.fused_ssim`: 640x480 forward + backward ~80 -> ~8 ms on 2 cores); elsewhere
    :func:`ssim_reference`, the same values and gradients.
    """
    if fused_ssim.usable(a, b):
        return fused_ssim.fused_ssim(a, b, _gaussian_taps(window, sigma, a.dtype, a.device), SSIM_C1, SSIM_C2)
    return ssim_reference(a, b, window, sigma)


def ssim_reference(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """:func:`ssim` in PyTorch ops, on any device, differentiable in both images.

    The five local moments (x, y, x², y², xy) are blurred together in one stacked tensor, and the 2D
    Gaussian window is applied as two 1D passes (2·11 taps instead of 121 per pixel): the same values as the
    direct 2D convolution up to rounding, and a cheaper backward.
    """
    x, y = a.permute(2, 0, 1), b.permute(2, 0, 1)
    C = x.shape[0]
    moments = torch.cat([x, y, x * x, y * y, x * y])[None]  # (1, 5C, H, W)
    g = _gaussian_taps(window, sigma, a.dtype, a.device)
    pad = window // 2
    k = 5 * C
    blurred = F.conv2d(moments, g.view(1, 1, 1, -1).expand(k, 1, 1, window), padding=(0, pad), groups=k)
    blurred = F.conv2d(blurred, g.view(1, 1, -1, 1).expand(k, 1, window, 1), padding=(pad, 0), groups=k)
    mu_x, mu_y, exx, eyy, exy = blurred[0].split(C)
    sxx, syy, sxy = exx - mu_x**2, eyy - mu_y**2, exy - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * sxy + SSIM_C2)
    den = (mu_x**2 + mu_y**2 + SSIM_C1) * (sxx + syy + SSIM_C2)
    return (num / den).mean()


def depth_l1(rendered_depth: Tensor, observed: Tensor) -> Tensor:
    """Mean |rendered - observed| over valid observed pixels (> 0). rendered_depth: accumulated (H, W)."""
    valid = observed > 0
    if not bool(valid.any()):
        return rendered_depth.sum() * 0.0
    return (rendered_depth - observed).abs()[valid].mean()


def near_depth(depth: Tensor, radius_px: int) -> Tensor:
    """(H, W) bool: pixels within ``radius_px`` (square window) of a valid depth (> 0) pixel."""
    valid = (depth > 0)[None, None].to(torch.float32)
    return F.max_pool2d(valid, 2 * radius_px + 1, stride=1, padding=radius_px)[0, 0] > 0


def mapping_loss(rgb: Tensor, depth: Tensor, target_rgb: Tensor, target_depth: Tensor, w_color: float,
                 w_ssim: float, w_depth: float, color_mask: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """Weighted L1 colour + (1 - SSIM) + L1 depth. rgb/target_rgb (H, W, 3) in [0, 1]; depths (H, W) metres.

    ``depth`` is the accumulated depth (sum of w_i z_i), so matching it also drives coverage (alpha) to 1.
    ``color_mask`` (H, W) bool, e.g. :func:`near_depth`: the colour terms see only these pixels (None: all). Gaussians
    are only grown where depth is valid; fitting the colour of a wall beyond the sensor's range pulls existing
    Gaussians into the view as floaters in front of the camera (apartment, true poses: the map's depth in front
    of the measured one by 60 cm on average in views through a door, 10 cm with the mask).
    """
    if color_mask is not None:
        keep = color_mask[..., None].to(rgb.dtype)
        rgb, target_rgb = rgb * keep, target_rgb * keep
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
