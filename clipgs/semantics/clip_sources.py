"""Real 2D semantic sources: class-agnostic masks + one CLIP image embedding per mask.

- ``clip_sam``: segment-anything's automatic mask generator (local checkpoint), CLIP per mask;
- ``clip_fast``: graph-based segmentation (Felzenszwalb) of colour + depth, fast on a CPU;
- ``precomputed``: masks and embeddings written earlier by ``clipgs extract`` (e.g. SAM + CLIP run once
  on a GPU machine), read per frame.
Each mask's embedding is CLIP's image embedding of the masked crop (outside the mask set to grey,
padded to a square, the model's own preprocessing), computed in batches.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clipgs.data.frame import Frame
from clipgs.semantics.segmentation import felzenszwalb_masks, masks_to_ids
from clipgs.semantics.sources import MaskEmbeddings
from clipgs.semantics.text import load_open_clip
from clipgs.semantics.torch_compat import import_torchvision

SAM_MODELS = ("vit_b", "vit_l", "vit_h")


class SamSegmenter:
    """segment-anything automatic masks of a frame. Weights from a local checkpoint only.

    sam: an already built ``Sam`` module (tests pass a tiny random one); otherwise ``model`` + ``weights``.
    """

    def __init__(self, model: str = "vit_b", weights: str | Path | None = None, sam: torch.nn.Module | None = None,
                 points_per_side: int = 32, pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 device: str | torch.device = "cpu") -> None:
        import_torchvision()  # segment-anything imports torchvision
        from segment_anything import SamAutomaticMaskGenerator, sam_model_registry

        if sam is None:
            sam = self._load(model, weights, sam_model_registry)
        self.generator = SamAutomaticMaskGenerator(
            sam.to(device).eval(), points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh)

    @staticmethod
    def _load(model: str, weights: str | Path | None, registry: dict) -> torch.nn.Module:
        if model not in SAM_MODELS:
            raise ValueError(f"unknown SAM model {model!r}; one of {', '.join(SAM_MODELS)}")
        if not weights:
            raise ValueError(f"clip_sam needs a local SAM checkpoint for {model} (e.g. sam_{model}_*.pth from the "
                             "segment-anything release); set sam_weights. clipgs never downloads weights.")
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"SAM weights not found: {path}. Copy the segment-anything checkpoint for "
                                    f"{model} to this machine and set sam_weights to its path.")
        sam = registry[model](checkpoint=None)
        try:
            sam.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:
            raise ValueError(f"{path} is not a segment-anything {model} checkpoint ({type(exc).__name__})") from exc
        return sam

    @torch.no_grad()
    def __call__(self, frame: Frame) -> np.ndarray:
        masks = [m["segmentation"] for m in self.generator.generate(frame.rgb)]
        ids = masks_to_ids(masks, frame.depth.shape)
        ids[frame.depth <= 0] = -1
        return ids


class MaskCLIPEmbedder:
    """CLIP image embeddings of masked crops; model and weights as for the text encoder (local files only)."""

    def __init__(self, model: str = "clipgs-tiny", weights: str | Path | None = None, batch: int = 32,
                 seed: int = 0, device: str | torch.device = "cpu") -> None:
        self.net, self.preprocess, _ = load_open_clip(model, weights, seed, device)
        self.batch, self.device = batch, torch.device(device)

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray, mask_ids: np.ndarray) -> torch.Tensor:
        """rgb (H, W, 3) uint8, mask_ids (H, W) -> (M, D) unit embeddings (CPU), row m for mask id m."""
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
            batch = torch.stack([self.preprocess(c) for c in crops[start:start + self.batch]]).to(self.device)
            out.append(F.normalize(self.net.encode_image(batch).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.net.text_projection.shape[1])


class MaskedCropSource:
    """A segmenter (frame -> (H, W) ids) + CLIP per mask; keeps the ``max_masks`` largest masks."""

    def __init__(self, segment: Callable[[Frame], np.ndarray], embedder: MaskCLIPEmbedder, max_masks: int = 64):
        self.segment, self.embedder, self.max_masks = segment, embedder, max_masks

    def __call__(self, frame: Frame) -> MaskEmbeddings:
        ids = largest_masks(self.segment(frame), self.max_masks)
        return MaskEmbeddings(torch.from_numpy(ids), self.embedder(frame.rgb, ids))


class ClipFastSource(MaskedCropSource):
    """``clip_fast``: Felzenszwalb masks on colour + depth, CLIP embedding per mask."""

    def __init__(self, embedder: MaskCLIPEmbedder, max_masks: int = 64, **segmentation) -> None:
        super().__init__(lambda frame: felzenszwalb_masks(frame, **segmentation), embedder, max_masks)


class ClipSamSource(MaskedCropSource):
    """``clip_sam``: segment-anything automatic masks, CLIP embedding per mask."""

    def __init__(self, embedder: MaskCLIPEmbedder, segmenter: SamSegmenter, max_masks: int = 64) -> None:
        super().__init__(segmenter, embedder, max_masks)


def largest_masks(ids: np.ndarray, max_masks: int) -> np.ndarray:
    """Renumber mask ids to 0..M-1 by decreasing area (keeping -1), dropping all but the ``max_masks`` largest."""
    out = np.full(ids.shape, -1, np.int64)
    valid = ids >= 0
    if not valid.any():
        return out
    labels, inverse, counts = np.unique(ids[valid], return_inverse=True, return_counts=True)
    rank = np.empty(len(labels), np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(len(labels))
    new = rank[inverse]
    out[valid] = np.where(new < max_masks, new, -1)
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
