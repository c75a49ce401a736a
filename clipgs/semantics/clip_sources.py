"""Real 2D semantic sources: class-agnostic masks + one CLIP image embedding per mask.

- ``clip_fast``: graph-based segmentation (Felzenszwalb) of colour + depth, fast on a CPU;
- ``precomputed``: masks and embeddings written earlier by ``clipgs extract`` (e.g. SAM + CLIP run once
  on a GPU machine), read per frame.
Each mask's embedding is CLIP's image embedding of the masked crop (outside the mask set to grey,
padded to a square, the model's own preprocessing), computed in batches.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clipgs.data.frame import Frame
from clipgs.semantics.sources import MaskEmbeddings
from clipgs.semantics.text import load_open_clip


def felzenszwalb_masks(frame: Frame, scale: float = 200.0, sigma: float = 0.8, min_size: int = 40,
                       depth_weight: float = 0.5) -> np.ndarray:
    """(H, W) int64 mask ids from colour and depth (depth as a fourth channel, scaled to the colour range)."""
    from skimage.segmentation import felzenszwalb

    rgb = frame.rgb.astype(np.float32) / 255.0
    depth = frame.depth / max(float(frame.depth.max()), 1e-6)
    image = np.concatenate([rgb, depth_weight * depth[..., None]], axis=-1)
    with warnings.catch_warnings():  # four channels (colour + depth) is the intent, not a mistake
        warnings.filterwarnings("ignore", message="Got image with third dimension of 4")
        ids = felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size, channel_axis=-1)
    ids = ids.astype(np.int64)
    ids[frame.depth <= 0] = -1  # no depth, no 3D: these pixels cannot supervise the map
    return ids


class MaskCLIPEmbedder:
    """CLIP image embeddings of masked crops; model and weights as for the text encoder (local files only)."""

    def __init__(self, model: str = "clipgs-tiny", weights: str | Path | None = None, batch: int = 32,
                 seed: int = 0) -> None:
        self.net, self.preprocess, _ = load_open_clip(model, weights, seed)
        self.batch = batch

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray, mask_ids: np.ndarray) -> torch.Tensor:
        """rgb (H, W, 3) uint8, mask_ids (H, W) -> (M, D) unit embeddings, row m for mask id m."""
        n = int(mask_ids.max()) + 1 if mask_ids.size and mask_ids.max() >= 0 else 0
        crops = []
        for m in range(n):
            ys, xs = np.nonzero(mask_ids == m)
            if len(ys) == 0:
                crops.append(Image.new("RGB", (8, 8), (128, 128, 128)))
                continue
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            crop = np.where((mask_ids[y0:y1, x0:x1] == m)[..., None], rgb[y0:y1, x0:x1], 128).astype(np.uint8)
            side = max(crop.shape[:2])
            square = np.full((side, side, 3), 128, np.uint8)
            oy, ox = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
            square[oy:oy + crop.shape[0], ox:ox + crop.shape[1]] = crop
            crops.append(Image.fromarray(square))
        out = []
        for start in range(0, n, self.batch):
            batch = torch.stack([self.preprocess(c) for c in crops[start:start + self.batch]])
            out.append(F.normalize(self.net.encode_image(batch).float(), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, self.net.text_projection.shape[1])


class ClipFastSource:
    """``clip_fast``: Felzenszwalb masks on colour + depth, CLIP embedding per mask."""

    def __init__(self, embedder: MaskCLIPEmbedder, **segmentation) -> None:
        self.embedder, self.segmentation = embedder, segmentation

    def __call__(self, frame: Frame) -> MaskEmbeddings:
        ids = felzenszwalb_masks(frame, **self.segmentation)
        ids = _compact(ids)
        return MaskEmbeddings(torch.from_numpy(ids), self.embedder(frame.rgb, ids))


def _compact(ids: np.ndarray) -> np.ndarray:
    """Renumber mask ids to 0..M-1 (keeping -1)."""
    valid = ids >= 0
    out = np.full(ids.shape, -1, np.int64)
    if valid.any():
        _, inverse = np.unique(ids[valid], return_inverse=True)
        out[valid] = inverse
    return out


def write_precomputed(obs: MaskEmbeddings, folder: str | Path, index: int) -> Path:
    """Store one frame's masks and embeddings as ``frame_{index}.npz`` (what ``clipgs extract`` writes)."""
    path = Path(folder) / f"frame_{index}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, mask_ids=obs.mask_ids.numpy().astype(np.int32),
                        embeddings=obs.embeddings.numpy().astype(np.float32))
    return path


class PrecomputedSource:
    """``precomputed``: masks + embeddings per frame from ``folder/frame_{index}.npz``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"precomputed semantics folder not found: {self.folder} (run clipgs extract)")

    def __call__(self, frame: Frame) -> MaskEmbeddings:
        path = self.folder / f"frame_{frame.index}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"no precomputed semantics for frame {frame.index}: {path}")
        data = np.load(path)
        ids = torch.from_numpy(data["mask_ids"].astype(np.int64))
        if tuple(ids.shape) != frame.depth.shape:
            raise ValueError(f"{path}: masks are {tuple(ids.shape)}, the frame is {frame.depth.shape}")
        return MaskEmbeddings(ids, F.normalize(torch.from_numpy(data["embeddings"]), dim=-1))
