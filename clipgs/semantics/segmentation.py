"""Class-agnostic segmentation shared by the 2D sources (clip_fast, clip_sam) and 3DCS on novel views."""
from __future__ import annotations

import ctypes
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from clipgs.data.frame import Frame
from clipgs.native import load_or_warn

SOURCE = Path(__file__).with_name("csrc") / "graph_segment.cpp"


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    """The compiled graph segmentation (csrc/graph_segment.cpp), or None (one warning) where it cannot be built."""
    lib = load_or_warn("clipgs_segment", [SOURCE], "compiled segmentation unavailable, scikit-image's runs "
                       "(~7x slower)")
    if lib is None:
        return None
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.clipgs_graph_segment.argtypes = [i64, i64, i64, p, ctypes.c_double, i64, p]
    lib.clipgs_graph_segment.restype = i64
    return lib


def compiled_available() -> bool:
    return _library() is not None


def graph_segment(image: np.ndarray, scale: float, sigma: float, min_size: int, compiled: bool = True) -> np.ndarray:
    """(H, W) int64 segment ids (0..n-1, numbered by first pixel in row-major order) of an (H, W, C) float image:
    Felzenszwalb-Huttenlocher graph segmentation with scikit-image's ``felzenszwalb`` parameters (``scale`` is
    the paper's k times 255; Gaussian smoothing ``sigma`` per channel first). Compiled (6-9x faster, the same
    labels up to the order of equal-weight edges); scikit-image's where it cannot be built or ``compiled`` is
    False."""
    lib = _library() if compiled else None
    if lib is None:
        from skimage.segmentation import felzenszwalb

        with warnings.catch_warnings():  # four channels (colour + depth) is the intent, not a mistake
            warnings.filterwarnings("ignore", message="Got image with third dimension of 4")
            return felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size, channel_axis=-1).astype(np.int64)
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(np.asarray(image, np.float64), sigma=[sigma, sigma, 0])  # as scikit-image
    smooth = np.ascontiguousarray(smooth, dtype=np.float32)
    h, w, c = smooth.shape
    ids = np.empty((h, w), np.int64)
    lib.clipgs_graph_segment(h, w, c, smooth.ctypes.data, scale / 255.0, int(min_size), ids.ctypes.data)
    return ids


def felzenszwalb_masks(frame: Frame, **options) -> np.ndarray:
    """(H, W) int64 mask ids of a frame's colour and depth (see ``segment_image`` for the options)."""
    return segment_image(frame.rgb, frame.depth, **options)


def segment_image(rgb: np.ndarray, depth: np.ndarray, scale: float = 200.0, sigma: float = 0.8, min_size: int = 40,
                  depth_weight: float = 0.5, max_width: int = 320) -> np.ndarray:
    """(H, W) int64 segment ids, -1 where depth is 0, from colour and depth (depth as a fourth channel, scaled
    to the colour range), by :func:`graph_segment`. rgb: (H, W, 3) uint8; depth: (H, W) float32 metres, 0 = invalid.

    Frames wider than ``max_width`` (0: no limit) are segmented on a block-averaged copy (an integer factor f,
    ``min_size`` in those coarser pixels) and the ids repeated back to full size: segmentation time grows faster
    than the pixel count (compiled, one core: 0.15 s at 640x480, 0.03 s block-averaged to 320x240; scikit-image
    0.61 / 0.11 s), and segments serve as masks to pool over, not as boundaries to the pixel.
    """
    scaled = depth / max(float(depth.max()), 1e-6)
    image = np.concatenate([rgb.astype(np.float32) / 255.0, depth_weight * scaled[..., None]], axis=-1)
    h, w = image.shape[:2]
    f = -(-w // max_width) if max_width > 0 else 1
    if f > 1:  # block mean over f x f (edge blocks partial), then segment the small image
        hp, wp = -(-h // f) * f, -(-w // f) * f
        padded = np.pad(image, ((0, hp - h), (0, wp - w), (0, 0)), mode="edge")
        image = padded.reshape(hp // f, f, wp // f, f, 4).mean(axis=(1, 3))
        min_size = max(1, round(min_size / f**2))
    ids = graph_segment(image, scale, sigma, min_size)
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
