"""Image files and false-colour visualisation (PIL + numpy only)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def read_image(path: str | Path) -> np.ndarray:
    """Read any PIL-readable image as a numpy array (uint8 RGB for colour, native dtype for 16-bit PNG)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.asarray(im, dtype=np.uint16 if im.mode.startswith("I;16") else np.int32)
        if im.mode in ("L", "P"):
            return np.asarray(im)
        return np.asarray(im.convert("RGB"))


def write_image(path: str | Path, array: np.ndarray) -> Path:
    """Write uint8 (H, W) / (H, W, 3) or uint16 (H, W) arrays as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.ascontiguousarray(array)
    if not ((array.dtype == np.uint16 and array.ndim == 2) or (array.dtype == np.uint8 and array.ndim in (2, 3))):
        raise ValueError(f"write_image: expected uint8 (H, W[, 3]) or uint16 (H, W), got {array.dtype} {array.shape}")
    Image.fromarray(array).save(path)
    return path


def resize(array: np.ndarray, width: int, height: int, nearest: bool) -> np.ndarray:
    """Resize an (H, W[, C]) array; ``nearest`` for depth and labels, bilinear for colour."""
    if array.shape[1] == width and array.shape[0] == height:
        return array
    mode = Image.NEAREST if nearest else Image.BILINEAR
    if array.dtype == np.uint8:
        return np.asarray(Image.fromarray(array).resize((width, height), mode))
    if array.ndim != 2:
        raise ValueError(f"resize: only uint8 images may have channels, got {array.dtype} {array.shape}")
    return np.asarray(Image.fromarray(array.astype(np.float32), mode="F").resize((width, height), mode)).astype(
        array.dtype
    )


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8."""
    return (np.clip(np.asarray(rgb, np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# Turbo colormap (Google, Apache-2.0) by its published polynomial fit.
_TURBO = np.array([
    [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
    [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
    [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
])


def colorize_unit(values: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] (clipped) -> (H, W, 3) uint8 turbo image, e.g. a relevancy map."""
    x = np.clip(np.nan_to_num(np.asarray(values, np.float64)), 0.0, 1.0)
    powers = np.stack([x**i for i in range(6)], axis=-1)
    return to_uint8(powers @ _TURBO.T)


def colorize_depth(depth: np.ndarray, max_depth: float | None = None) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) uint8 turbo image; invalid (0) pixels are black."""
    depth = np.asarray(depth, np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    top = max_depth if max_depth else (float(np.percentile(depth[valid], 99)) if valid.any() else 1.0)
    rgb = colorize_unit(np.where(valid, depth, 0.0) / max(top, 1e-6))
    rgb[~valid] = 0
    return rgb


def label_palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 distinct colours; class 0 (void) is black."""
    rng = np.random.default_rng(12345)
    pal = rng.integers(40, 256, size=(n, 3)).astype(np.uint8)
    pal[0] = 0
    return pal


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W) int class ids -> (H, W, 3) uint8."""
    labels = np.asarray(labels)
    return label_palette(max(256, int(labels.max(initial=0)) + 1))[labels]
