"""Exact CPU/any-device rasterizer in plain PyTorch (differentiable by autograd).

Algorithm (the same image as gsplat's classic rasterizer):
1. tile binning: every visible Gaussian is listed in each 16x16 tile its bounding box touches;
2. one argsort on (tile, depth rank) orders each tile's list front to back;
3. tiles are composited in chunks of similar list length: alphas (tiles, 256 px, K), front-to-back
   transmittance by cumulative product, early termination when transmittance would fall to 1e-4
   (that Gaussian excluded, as in gsplat), then weights @ features as one batched matmul.
Chunks are sized so a chunk's working set stays under ``chunk_elements`` scalars; when gradients are
needed each chunk is checkpointed (recomputed in backward), so memory stays bounded on dense scenes.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from clipgs.render.projection import ALPHA_THRESHOLD, Projected

TILE = 16
TRANSMITTANCE_EPS = 1e-4
MAX_ALPHA = 0.999


def bin_tiles(proj: Projected, width: int, height: int, tile: int = TILE):
    """List (tile, Gaussian) intersections sorted by tile, then depth.

    Returns (gauss_ids (M,) int64 sorted, tile_start (T,) int64, tile_count (T,) int64, tiles_x, tiles_y).
    """
    tiles_x, tiles_y = (width + tile - 1) // tile, (height + tile - 1) // tile
    n_tiles = tiles_x * tiles_y
    device = proj.means2d.device
    with torch.no_grad():
        vis = torch.nonzero(proj.visible).squeeze(1)
        if vis.numel() == 0:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            zeros = torch.zeros(n_tiles, dtype=torch.long, device=device)
            return empty, zeros, zeros.clone(), tiles_x, tiles_y
        m = proj.means2d[vis].detach()
        r = proj.radii[vis].to(m.dtype)
        x0 = torch.clamp(torch.floor((m[:, 0] - r[:, 0]) / tile), 0, tiles_x).long()
        x1 = torch.clamp(torch.ceil((m[:, 0] + r[:, 0]) / tile), 0, tiles_x).long()
        y0 = torch.clamp(torch.floor((m[:, 1] - r[:, 1]) / tile), 0, tiles_y).long()
        y1 = torch.clamp(torch.ceil((m[:, 1] + r[:, 1]) / tile), 0, tiles_y).long()
        w = (x1 - x0).clamp(min=0)
        counts = w * (y1 - y0).clamp(min=0)
        # Front-to-back order inside a tile comes from the depth rank of each Gaussian.
        depth_rank = torch.empty_like(vis)
        depth_rank[torch.argsort(proj.depths[vis].detach(), stable=True)] = torch.arange(
            vis.numel(), device=device
        )
        owner = torch.repeat_interleave(torch.arange(vis.numel(), device=device), counts)
        first = torch.cumsum(counts, 0) - counts
        local = torch.arange(owner.numel(), device=device) - first[owner]
        wo = w[owner].clamp(min=1)
        tile_ids = (y0[owner] + local // wo) * tiles_x + x0[owner] + local % wo
        order = torch.argsort(tile_ids * vis.numel() + depth_rank[owner])
        gauss_ids = vis[owner[order]]
        tile_count = torch.bincount(tile_ids, minlength=n_tiles)
        tile_start = torch.cumsum(tile_count, 0) - tile_count
    return gauss_ids, tile_start, tile_count, tiles_x, tiles_y


def _composite_chunk(
    origin: Tensor, means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor, tile: int
) -> Tensor:
    """Composite one chunk of T tiles, each with a depth-sorted list of K Gaussians (padding: opacity 0).

    origin: (T, 2) tile corner in pixels; means2d (T, K, 2); conics (T, K, 3); opacities (T, K);
    feats (T, K, C). Returns (T, tile * tile, C + 1): composited features and alpha, row-major pixels.
    """
    n_tiles, K = opacities.shape
    centres = torch.arange(tile, dtype=means2d.dtype, device=means2d.device) + 0.5
    # The Mahalanobis term is separable: dx depends on the pixel column only, dy on the row only.
    dx = means2d[:, None, :, 0] - (origin[:, 0, None, None] + centres[None, :, None])  # (T, tile, K)
    dy = means2d[:, None, :, 1] - (origin[:, 1, None, None] + centres[None, :, None])  # (T, tile, K)
    a, b, c = (conics[:, None, :, i] for i in range(3))
    sigma_x, sigma_y, bx = 0.5 * a * dx * dx, 0.5 * c * dy * dy, b * dx
    sigma = (sigma_y[:, :, None, :] + sigma_x[:, None, :, :]) + bx[:, None, :, :] * dy[:, :, None, :]
    sigma = sigma.reshape(n_tiles, tile * tile, K)
    alpha = torch.clamp(opacities[:, None, :] * torch.exp(-sigma), max=MAX_ALPHA)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
    trans_incl = torch.cumprod(1.0 - alpha, dim=-1)
    # Gaussian i is composited only while transmittance after it stays above the threshold; the
    # product is non-increasing, so this is a prefix (gsplat stops at the first failure).
    keep = trans_incl.detach() > TRANSMITTANCE_EPS
    trans_excl = torch.cat([torch.ones_like(trans_incl[..., :1]), trans_incl[..., :-1]], dim=-1)
    weights = torch.where(keep, alpha * trans_excl, torch.zeros_like(alpha))
    out = torch.bmm(weights, feats)  # (T, P, C)
    return torch.cat([out, weights.sum(-1, keepdim=True)], dim=-1)


def composite(
    proj: Projected,
    features: Tensor,
    width: int,
    height: int,
    chunk_elements: int = 1 << 18,
    checkpoint_above: int = 1 << 26,
    tile: int = TILE,
) -> tuple[Tensor, Tensor, Tensor]:
    """Front-to-back alpha compositing of projected Gaussians.

    features: (N, C). Returns image (H, W, C), accumulated depth (H, W) = sum_i w_i z_i, alpha (H, W).
    chunk_elements: padded (tiles x 256 x K) scalars per chunk (small chunks stay in cache).
    checkpoint_above: with gradients, chunks are recomputed in backward instead of stored once the whole
    image needs more than this many (pixel, Gaussian) pairs: memory stays bounded on dense scenes.
    """
    C = features.shape[1]
    dtype, device = features.dtype, features.device
    feats = torch.cat([features, proj.depths[:, None].to(dtype)], dim=-1)  # depth rides along as a channel
    gauss_ids, tile_start, tile_count, tiles_x, tiles_y = bin_tiles(proj, width, height, tile)
    n_tiles, P = tiles_x * tiles_y, tile * tile
    out = torch.zeros(n_tiles, P, C + 2, dtype=dtype, device=device)

    busy = torch.nonzero(tile_count).squeeze(1)
    if busy.numel():
        busy = busy[torch.argsort(tile_count[busy])]  # similar list lengths share a chunk: little padding
        counts = tile_count[busy].tolist()
        grad = torch.is_grad_enabled() and (features.requires_grad or proj.means2d.requires_grad)
        checkpointing = int(tile_count.sum()) * P > checkpoint_above
        pieces, start = [], 0
        while start < len(counts):
            stop = start + 1
            # Chunks grow while the padded (tiles, P, K) block fits the budget.
            while stop < len(counts) and (stop - start + 1) * P * counts[stop] <= chunk_elements:
                stop += 1
            k_max = counts[stop - 1]
            tiles = busy[start:stop]
            slot = torch.arange(k_max, device=device)
            valid = slot[None, :] < tile_count[tiles][:, None]
            idx = torch.where(valid, tile_start[tiles][:, None] + slot[None, :], 0)
            gid = gauss_ids[idx]
            origin = torch.stack([tiles % tiles_x, tiles // tiles_x], dim=-1).to(dtype) * tile
            opac = torch.where(valid, proj.opacities[gid], torch.zeros((), dtype=dtype, device=device))
            args = (origin, proj.means2d[gid], proj.conics[gid], opac, feats[gid], tile)
            if grad and checkpointing:
                piece = checkpoint(_composite_chunk, *args, use_reentrant=False)
            else:
                piece = _composite_chunk(*args)
            pieces.append((tiles, piece))
            start = stop
        all_tiles = torch.cat([t for t, _ in pieces])
        out = out.index_copy(0, all_tiles, torch.cat([p for _, p in pieces]))

    img = out.reshape(tiles_y, tiles_x, tile, tile, C + 2).permute(0, 2, 1, 3, 4)
    img = img.reshape(tiles_y * tile, tiles_x * tile, C + 2)[:height, :width]
    return img[..., :C], img[..., C], img[..., C + 1]
