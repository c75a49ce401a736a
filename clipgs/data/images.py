"""Image files and false-colour visualisation (PIL + numpy only)."""
from __future__ import annotations

import functools
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


def write_image(path: str | Path, array: np.ndarray, compress_level: int = 6) -> Path:
    """Write uint8 (H, W) / (H, W, 3) or uint16 (H, W) arrays as PNG (zlib ``compress_level`` 0-9; 1 writes
    ~4x faster for ~15 % more bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.ascontiguousarray(array)
    if not ((array.dtype == np.uint16 and array.ndim == 2) or (array.dtype == np.uint8 and array.ndim in (2, 3))):
        raise ValueError(f"write_image: expected uint8 (H, W[, 3]) or uint16 (H, W), got {array.dtype} {array.shape}")
    Image.fromarray(array).save(path, compress_level=compress_level)
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


def resize_depth(depth: np.ndarray, width: int, height: int, rel_tol: float = 0.05) -> np.ndarray:
    """Resample depth (H, W) metres, 0 = invalid, to (height, width) at the pixel centres the scaled intrinsics
    assume (:func:`clipgs.geometry.scale_intrinsics`): new pixel u sits at source (u + 0.5) * W / width - 0.5.

    Edge-aware bilinear: of the four source pixels around that point, those within ``rel_tol`` (relative) of the
    valid one with the largest weight are blended by their weights, so depth is never mixed across an edge nor
    with invalid pixels (0 only where all four are invalid). Nearest sampling is not centred: halving takes
    pixel 2u + 1 where the intrinsics assume 2u + 0.5, a quarter-pixel shift of every ray that biased ICP
    tracking by ~1 mm per keyframe (apartment at 160 x 120, true poses: keyframe ATE 4.3 -> 1.3 cm).
    """
    h0, w0 = depth.shape
    if (w0, h0) == (width, height):
        return depth
    rows, cols, w = _bilinear_taps(h0, w0, height, width)
    d = depth[rows, cols]  # (4, height, width): the four source pixels around each new pixel centre
    valid = d > 0
    anchor = np.take_along_axis(d, np.argmax(np.where(valid, w + 1e-6, -1.0), axis=0)[None], axis=0)[0]
    w = np.where(valid & (np.abs(d - anchor) <= rel_tol * anchor), w, 0.0)
    total = w.sum(axis=0)
    return np.where(total > 0, (w * d).sum(axis=0) / np.maximum(total, 1e-12), 0.0).astype(depth.dtype)


@functools.lru_cache(maxsize=8)
def _bilinear_taps(h0: int, w0: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For :func:`resize_depth` (a stream resizes every frame alike, so cached): source rows (4, height, 1) and
    columns (4, 1, width) of the four pixels around each new pixel centre, which index a depth image as (4,
    height, width), and their bilinear weights (4, height, width)."""
    x = np.clip((np.arange(width) + 0.5) * w0 / width - 0.5, 0.0, w0 - 1.0)
    y = np.clip((np.arange(height) + 0.5) * h0 / height - 0.5, 0.0, h0 - 1.0)
    x0, y0 = np.minimum(x.astype(np.int64), max(w0 - 2, 0)), np.minimum(y.astype(np.int64), max(h0 - 2, 0))
    x1, y1 = np.minimum(x0 + 1, w0 - 1), np.minimum(y0 + 1, h0 - 1)
    fx, fy = x - x0, y - y0
    rows, cols = np.stack([y0, y0, y1, y1])[:, :, None], np.stack([x0, x1, x0, x1])[:, None, :]
    w = np.stack([np.outer(1 - fy, 1 - fx), np.outer(1 - fy, fx), np.outer(fy, 1 - fx), np.outer(fy, fx)])
    for a in (rows, cols, w):
        a.flags.writeable = False
    return rows, cols, w


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


# Kelly's 22 colours of maximum contrast (less white and black), then seeded random colours.
_DISTINCT = np.array([
    [243, 195, 0], [135, 86, 146], [243, 132, 0], [161, 202, 241], [190, 0, 50], [194, 178, 128],
    [0, 136, 86], [230, 143, 172], [0, 103, 165], [249, 150, 121], [96, 78, 151], [246, 166, 0],
    [179, 68, 108], [220, 211, 0], [136, 45, 23], [141, 182, 0], [101, 69, 34], [226, 88, 34],
    [43, 61, 38], [132, 132, 130]], np.uint8)


def label_palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 colours, the first 20 classes as distinct as possible; class 0 (void) is black."""
    rng = np.random.default_rng(12345)
    pal = rng.integers(40, 256, size=(max(n, 1 + len(_DISTINCT)), 3)).astype(np.uint8)
    pal[1:1 + len(_DISTINCT)] = _DISTINCT
    pal[0] = 0
    return pal[:n]


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W) int class ids -> (H, W, 3) uint8."""
    labels = np.asarray(labels)
    return label_palette(max(256, int(labels.max(initial=0)) + 1))[labels]


# --- images a person reads: upscaling, titled panels, legends ----------------------------------------------------

def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except TypeError:
        return ImageFont.load_default()


def upscale_nearest(image: np.ndarray, min_width: int = 320) -> np.ndarray:
    """(H, W[, 3]) uint8 -> repeated by the smallest integer factor that makes it >= ``min_width`` wide."""
    factor = max(1, -(-min_width // image.shape[1]))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1) if factor > 1 else image


def text_band(width: int, text: str, height: int = 26, size: int = 16) -> np.ndarray:
    from PIL import ImageDraw

    band = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(band).text((6, (height - size) // 2 - 1), text, fill=(0, 0, 0), font=_font(size))
    return np.asarray(band)


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def titled_row(tiles: list[np.ndarray], titles: list[str], min_width: int = 320, gap: int = 4) -> np.ndarray:
    """Same-size uint8 tiles side by side, each upscaled (nearest) to >= ``min_width`` px and titled above."""
    if len(tiles) != len(titles) or not tiles:
        raise ValueError(f"titled_row: {len(tiles)} tiles for {len(titles)} titles")
    columns = []
    for tile, title in zip(tiles, titles):
        big = upscale_nearest(_rgb(tile), min_width)
        columns.append(np.concatenate([text_band(big.shape[1], title), big]))
    spacer = np.full((columns[0].shape[0], gap, 3), 255, np.uint8)
    return np.concatenate([c for col in columns for c in (col, spacer)][:-1], axis=1)


def legend_image(names: list[str], colours: np.ndarray, width: int, swatch: int = 16, size: int = 14) -> np.ndarray:
    """A legend (colour swatch + name per entry), as many columns as fit in ``width`` px; uint8 (H, width, 3)."""
    from PIL import ImageDraw

    font = _font(size)
    cell = max([int(font.getlength(n)) for n in names] + [40]) + swatch + 18
    cols = max(1, width // cell)
    rows = -(-len(names) // cols) if names else 0
    canvas = Image.new("RGB", (width, rows * (swatch + 8) + 8), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, (name, colour) in enumerate(zip(names, np.asarray(colours, np.uint8))):
        x, y = 6 + (k % cols) * cell, 6 + (k // cols) * (swatch + 8)
        draw.rectangle([x, y, x + swatch, y + swatch], fill=tuple(int(c) for c in colour), outline=(0, 0, 0))
        draw.text((x + swatch + 6, y), name, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def stack_rows(*rows: np.ndarray) -> np.ndarray:
    """uint8 RGB images one above the other, padded white on the right to the widest."""
    width = max(r.shape[1] for r in rows)
    padded = [np.concatenate([r, np.full((r.shape[0], width - r.shape[1], 3), 255, np.uint8)], 1) for r in rows]
    return np.concatenate(padded, axis=0)


def labelled_classes_panel(tiles: list[np.ndarray], titles: list[str], class_names: list[str],
                           min_width: int = 320) -> np.ndarray:
    """Class-id images (H, W) side by side in class colours, titled, with a legend of the classes they show."""
    present = sorted(set(np.unique(np.concatenate([t.ravel() for t in tiles])).tolist()) - {0})
    row = titled_row([colorize_labels(t) for t in tiles], titles, min_width)
    names = [class_names[c] if c < len(class_names) else f"class {c}" for c in present]
    return stack_rows(row, legend_image(names, label_palette()[present], row.shape[1])) if present else row
