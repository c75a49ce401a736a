"""Class-agnostic segmentation shared by the 2D sources (clip_fast, clip_sam) and 3DCS on novel views."""
from __future__ import annotations

import warnings

import numpy as np

from clipgs.data.frame import Frame


def felzenszwalb_masks(frame: Frame, **options) -> np.ndarray:
    """(H, W) int64 mask ids of a frame's colour and depth (see ``segment_image`` for the options)."""
    return segment_image(frame.rgb, frame.depth, **options)


def segment_image(rgb: np.ndarray, depth: np.ndarray, scale: float = 200.0, sigma: float = 0.8, min_size: int = 40,
                  depth_weight: float = 0.5, max_width: int = 320) -> np.ndarray:
    """(H, W) int64 segment ids, -1 where depth is 0, from colour and depth (depth as a fourth channel, scaled
    to the colour range). rgb: (H, W, 3) uint8; depth: (H, W) float32 metres, 0 = invalid.

    Frames wider than ``max_width`` (0: no limit) are segmented on a block-averaged copy (an integer factor f,
    ``min_size`` in those coarser pixels) and the ids repeated back to full size: segmentation time grows faster
    than the pixel count (0.66 s at 640x480 against 0.08 s at 320x240 on one core), and segments serve as masks
    to pool over, not as boundaries to the pixel.
    """
    from skimage.segmentation import felzenszwalb

    scaled = depth / max(float(depth.max()), 1e-6)
    image = np.concatenate([rgb.astype(np.float32) / 255.0, depth_weight * scaled[..., None]], axis=-1)
    h, w = image.shape[:2]
    f = -(-w // max_width) if max_width > 0 else 1
    if f > 1:  # block mean over f x f (edge blocks partial), then segment the small image
        hp, wp = -(-h // f) * f, -(-w // f) * f
        padded = np.pad(image, ((0, hp - h), (0, wp - w), (0, 0)), mode="edge")
        image = padded.reshape(hp // f, f, wp // f, f, 4).mean(axis=(1, 3))
        min_size = max(1, round(min_size / f**2))
    with warnings.catch_warnings():  # four channels (colour + depth) is the intent, not a mistake
        warnings.filterwarnings("ignore", message="Got image with third dimension of 4")
        ids = felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size, channel_axis=-1)
    ids = ids.astype(np.int64)
    if f > 1:
        ids = np.repeat(np.repeat(ids, f, axis=0), f, axis=1)[:h, :w]
    ids[depth <= 0] = -1  # no depth, no 3D: these pixels cannot supervise the map
    return ids


def masks_to_ids(masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Overlapping boolean masks -> (H, W) int64 ids, -1 = none. Larger masks first, so a part drawn inside
    an object (SAM's nested masks) keeps its own id; a mask left without pixels disappears."""
    ids = np.full(shape, -1, np.int64)
    for m, mask in enumerate(sorted(masks, key=lambda x: -int(x.sum()))):
        ids[mask] = m
    return ids
