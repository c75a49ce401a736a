"""Coherent labels for rendered views: the decoded semantics voted inside segments of the view's own render.

Decoding blended attributes pixel by pixel leaves speckle at object borders and on thin parts: a blend of two
objects' attributes can decode to a third class. Every image-level mIoU counts each such stray class as a
class with IoU 0. Segments of the rendered colour + depth (the graph segmentation 3DCS uses on novel views)
bound objects well; inside each, the majority of the per-pixel classes wins (labels) or the relevancy is
averaged (query masks). Pixels where the map is empty stay out of every segment. A connected piece of one class
large enough not to be speckle keeps its class whatever its segment says (:func:`keep_large_pieces`): the
segmentation merges small objects into what is behind them (a lamp into the wall) more often than the decoder
misreads them.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from clipgs.data.images import to_uint8
from clipgs.render import RenderOutput
from clipgs.semantics.segmentation import segment_image

# The segmentation's defaults suit 320x240; labels on smaller images scale its merge threshold and minimum
# segment size with the pixel count (wider images are segmented at 320 pixels wide anyway). On the room's
# demo map at 160x120 the unscaled segments swallowed the lamp and the vase: 49.9 mIoU against 55.0 scaled.
LABEL_REFERENCE_PIXELS = 320 * 240
SEGMENT_SCALE, SEGMENT_MIN_SIZE = 200.0, 40
# Per-pixel pieces of at least this share of the image (64 pixels at 160x120) keep their class in coherent labels.
# On five apartment and two room maps (both teachers) 1/300 to 1/200 scored best or level with plain majorities:
# apartment every 8th frame 64.2 -> 67.7 mIoU, room (realistic, seed 0) 55.0 -> 57.8.
KEEP_PIECE_FRACTION = 1 / 300


def rendered_segments(out: RenderOutput, scale_with_size: bool = False, max_width: int = 320) -> Tensor:
    """(H, W) int64 segment ids of a render's colour + depth where opacity > 0.5, -1 elsewhere (out's device).

    scale_with_size: segments as fine, relative to the image, at any size below 320x240 (labels and queries);
    False: the segmentation's fixed defaults (3DCS pseudo-labels). max_width: wider renders are segmented on a
    block-averaged copy this wide (see ``segment_image``).
    """
    rgb = to_uint8(out.rgb.clamp(0, 1).cpu().numpy())
    depth = torch.where(out.alpha > 0.5, out.expected_depth(), 0.0).cpu().numpy().astype(np.float32)
    f = min(1.0, depth.size / LABEL_REFERENCE_PIXELS) if scale_with_size else 1.0
    ids = segment_image(rgb, depth, scale=SEGMENT_SCALE * f, min_size=max(1, round(SEGMENT_MIN_SIZE * f)),
                        max_width=max_width)
    return torch.from_numpy(ids).to(out.image.device)


def segment_majority(labels: Tensor, segments: Tensor) -> Tensor:
    """(H, W) labels >= 0 -> the most frequent label of each segment on its pixels; pixels outside segments
    (id -1) keep their own. Ties go to the smaller label."""
    inside = segments >= 0
    if not bool(inside.any()):
        return labels.clone()
    n_labels = int(labels.max()) + 1
    seg, lab = segments[inside], labels[inside]
    votes = torch.zeros(int(seg.max()) + 1, n_labels, dtype=torch.long, device=labels.device)
    votes.index_put_((seg, lab), torch.ones_like(lab), accumulate=True)
    out = labels.clone()
    out[inside] = votes.argmax(dim=1)[seg]
    return out


def keep_large_pieces(labels: Tensor, voted: Tensor, min_fraction: float = KEEP_PIECE_FRACTION) -> Tensor:
    """(H, W) per-pixel labels and the same voted by segment -> ``labels`` on connected pieces (4-neighbours) of
    one non-void class covering at least ``min_fraction`` of the image, ``voted`` elsewhere (speckle and the
    thin blends along borders are smaller)."""
    from skimage.measure import label as connected_pieces  # scikit-image loads slowly: only when labels are made

    pieces = connected_pieces(labels.cpu().numpy() + 1, background=0, connectivity=1)
    size = np.bincount(pieces.ravel())[pieces]
    keep = torch.from_numpy(size >= min_fraction * labels.numel()).to(labels.device) & (labels > 0)
    return torch.where(keep, labels, voted)


def segment_mean(values: Tensor, segments: Tensor) -> Tensor:
    """(H, W) float values -> each segment's mean on its pixels; pixels outside segments keep their own."""
    inside = segments >= 0
    if not bool(inside.any()):
        return values.clone()
    seg = segments[inside]
    n = int(seg.max()) + 1
    sums = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, seg, values[inside])
    counts = torch.bincount(seg, minlength=n).clamp(min=1).to(values.dtype)
    out = values.clone()
    out[inside] = (sums / counts)[seg]
    return out


def split_masks(masks: Tensor, segments: Tensor) -> Tensor:
    """(H, W) mask ids cut by (H, W) segment ids: one id per (mask, segment) pair present, -1 where either is.
    A 2D mask that took in a small object and its support comes apart where the render's segments do."""
    valid = (masks >= 0) & (segments >= 0)
    out = torch.full_like(masks, -1)
    if bool(valid.any()):
        pair = masks[valid] * (int(segments.max()) + 1) + segments[valid]
        out[valid] = torch.unique(pair, return_inverse=True)[1]
    return out
