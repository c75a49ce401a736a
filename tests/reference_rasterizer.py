"""Brute-force per-pixel rasterizer used only as a test oracle.

Projection comes from gsplat's own pure-PyTorch reference (independent of clipgs code); compositing
is an explicit loop per pixel over all Gaussians in depth order, written after gsplat's CUDA kernel:
alpha = min(0.999, o exp(-sigma)); skip if sigma < 0 or alpha < 1/255; stop (exclusive) when the
transmittance would reach 1e-4. No tiles, no chunks, no vectorisation tricks.
"""
from __future__ import annotations

import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci


def reference_rasterize(means, quats, log_scales, opacity_logits, features, viewmat, K, width, height,
                        near=0.01, far=1e10, eps2d=0.3):
    """Returns image (H, W, C), accumulated depth (H, W), alpha (H, W). K in gsplat's convention."""
    quats = quats / quats.norm(dim=-1, keepdim=True)
    covars, _ = _quat_scale_to_covar_preci(quats, torch.exp(log_scales), compute_preci=False)
    _radii, means2d, depths, conics, _ = _fully_fused_projection(
        means, covars, viewmat[None], K[None], width, height, eps2d=eps2d, near_plane=near, far_plane=far
    )
    means2d, depths, conics = means2d[0], depths[0], conics[0]
    opac = torch.sigmoid(opacity_logits)
    z = depths.detach()
    live = [i for i in torch.argsort(z).tolist() if near < float(z[i]) < far]
    C = features.shape[1]
    rows = []
    for y in range(height):
        row = []
        for x in range(width):
            px, py = x + 0.5, y + 0.5
            T = torch.ones((), dtype=means.dtype)
            acc = torch.zeros(C + 1, dtype=means.dtype)
            for g in live:
                dx, dy = means2d[g, 0] - px, means2d[g, 1] - py
                a, b, c = conics[g]
                sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                alpha = torch.clamp(opac[g] * torch.exp(-sigma), max=0.999)
                if float(sigma.detach()) < 0 or float(alpha.detach()) < 1.0 / 255.0:
                    continue
                next_T = T * (1 - alpha)
                if float(next_T.detach()) <= 1e-4:
                    break
                acc = acc + alpha * T * torch.cat([features[g], depths[g:g + 1]])
                T = next_T
            row.append(torch.cat([acc, (1 - T)[None]]))
        rows.append(torch.stack(row))
    out = torch.stack(rows)
    return out[..., :C], out[..., C], out[..., C + 1]
