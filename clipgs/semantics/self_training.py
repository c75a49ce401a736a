"""3DCS pseudo-labels: the map's own semantics, made consistent inside each 2D mask (keyframes and novel views)."""
from __future__ import annotations

import itertools

import torch
from torch import Tensor

from clipgs.data.frame import Camera
from clipgs.geometry import interpolate_pose
from clipgs.mapping.gaussian_map import GaussianMap
from clipgs.render import RenderOutput, rasterize
from clipgs.semantics.coherence import rendered_segments
from clipgs.semantics.sac import SemanticDecoder


def vote_in_masks(logits: Tensor, mask_ids: Tensor, confidence: float, ignore_class: int | None = 0) -> Tensor:
    """(H, W, C) logits + (H, W) mask ids -> (H, W) pseudo-labels, -1 = none.

    Every mask takes the majority label of its confident pixels (softmax >= ``confidence``); pixels
    below the confidence get no label, as do masks without a confident pixel and pixels outside masks.
    ``ignore_class`` (the void row of a vocabulary) is never predicted.
    """
    out = torch.full(mask_ids.shape, -1, dtype=torch.long, device=logits.device)
    if logits.shape[-1] - (0 if ignore_class is None else 1) < 1:  # no class to choose
        return out
    scores = logits[..., 1:] if ignore_class == 0 else logits  # void first (a vocabulary's row 0): left out, no copy
    if ignore_class not in (None, 0):
        scores = scores.clone()
        scores[..., ignore_class] = float("-inf")
    top, label = scores.max(dim=-1)
    conf = torch.exp(scores - top[..., None]).sum(dim=-1).reciprocal()  # the softmax's largest value
    label = label + 1 if ignore_class == 0 else label
    confident = (conf >= confidence) & (mask_ids >= 0)
    if not bool(confident.any()):
        return out
    n_masks, n_classes = int(mask_ids.max()) + 1, logits.shape[-1]
    votes = torch.zeros(n_masks * n_classes, dtype=torch.long, device=logits.device)
    votes.index_add_(0, (mask_ids[confident] * n_classes + label[confident]).reshape(-1),
                     torch.ones(int(confident.sum()), dtype=torch.long, device=logits.device))
    votes = votes.reshape(n_masks, n_classes)
    winner = votes.argmax(dim=1)
    has_vote = votes.sum(dim=1) > 0
    inside = mask_ids >= 0
    mask_label = torch.where(has_vote, winner, torch.full_like(winner, -1))
    out[inside] = mask_label[mask_ids[inside]]
    out[~(conf >= confidence)] = -1
    return out


def novel_cameras(cameras: list[Camera], per_pair: int) -> list[Camera]:
    """``per_pair`` cameras evenly between each pair of consecutive cameras (poses interpolated; first K)."""
    out = []
    for a, b in itertools.pairwise(cameras):
        for j in range(1, per_pair + 1):
            pose = interpolate_pose(a.world_from_camera, b.world_from_camera, j / (per_pair + 1))
            out.append(Camera(a.K, a.width, a.height, pose))
    return out


@torch.no_grad()
def label_rendered_view(out: RenderOutput, decoder: SemanticDecoder, vocabulary: Tensor,
                        confidence: float, tau: float, segment_width: int = 320) -> Tensor:
    """(H, W) pseudo-labels (-1 = none) for a view without a 2D teacher: class-agnostic segments of the
    rendered colour + depth (where opacity > 0.5) stand in for its masks, the decoded semantics vote inside them.
    """
    ids = rendered_segments(out, max_width=segment_width)
    logits = decoder.similarity(out.semantics, vocabulary) / tau
    return vote_in_masks(logits, ids, confidence)


@torch.no_grad()
def rendered_share(gaussians: GaussianMap, chosen: Tensor, camera: Camera, backend: str = "auto") -> Tensor:
    """(H, W) the share of each pixel's rendered weight that the ``chosen`` (N,) bool Gaussians carry, 0 where the
    map is empty (rendered as one channel; the render culls to the view itself)."""
    g = gaussians
    out = rasterize(g.means, g.quats, g.log_scales, g.opacity_logits, chosen[:, None].to(g.means), camera,
                    backend=backend)
    return out.image[..., 0] / out.alpha.clamp(min=1e-6)


def relabel_indices(count: int, budget: int, cursor: int) -> tuple[list[int], int]:
    """Indices (ascending) of the keyframes one 3DCS round relabels out of ``count``, and the next cursor: all
    of them up to ``budget``; beyond, the newest half of the budget plus the rest taken in turn from the older
    ones from ``cursor`` on (it wraps), so every keyframe is revisited."""
    if count <= budget:
        return list(range(count)), cursor
    recent = budget - budget // 2
    older = count - recent
    take = [(cursor + j) % older for j in range(min(budget // 2, older))]
    return sorted(take) + list(range(older, count)), (cursor + len(take)) % older
