"""Real 2D semantic sources: class-agnostic masks + one CLIP image embedding per mask.

- ``clip_sam``: segment-anything's automatic mask generator (local checkpoint), CLIP per mask;
- ``clip_fast``: graph-based segmentation (Felzenszwalb) of colour + depth, fast on a CPU;
- ``clip_dense``: the same segments, embedded from one forward pass of the image tower over the whole frame
  (MaskCLIP: patch tokens through the last block's value path and the image projection), pooled per segment;
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


class DenseCLIPEmbedder:
    """Dense CLIP features of a whole frame in one pass (MaskCLIP): every patch token lands in the text space.

    The last transformer block's query-key attention and MLP are skipped: its value path (in-projection of
    values, out-projection) feeds ``ln_post`` and the image projection directly, which keeps each token's
    own content instead of the image-level summary. The frame is resized so its short side is the model's
    input size (224 for ViT-B-16) and both sides are whole patches; positional embeddings are interpolated.
    """

    def __init__(self, model: str = "clipgs-tiny", weights: str | Path | None = None, seed: int = 0,
                 device: str | torch.device = "cpu", short_side: int | None = None) -> None:
        self.net, _, _ = load_open_clip(model, weights, seed, device)
        visual = self.net.visual
        if not hasattr(visual, "conv1") or getattr(visual, "attn_pool", None) is not None or visual.proj is None:
            raise ValueError(f"clip_dense needs a plain ViT open_clip model (e.g. ViT-B-16); {model} is not one")
        self.device = torch.device(device)
        self.patch = int(visual.conv1.kernel_size[0])
        self.short_side = short_side or int(min(visual.image_size))
        cfg = getattr(visual, "preprocess_cfg", {})
        self.mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))).view(1, 3, 1, 1)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (rows, cols) for a frame of this size."""
        scale = self.short_side / min(height, width)
        return max(1, round(height * scale / self.patch)), max(1, round(width * scale / self.patch))

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        """rgb (H, W, 3) uint8 -> (rows, cols, D) unit features (CPU), one per patch."""
        v = self.net.visual
        rows, cols = self.grid(*rgb.shape[:2])
        img = torch.tensor(rgb).permute(2, 0, 1)[None].float() / 255.0
        img = F.interpolate(img, size=(rows * self.patch, cols * self.patch), mode="bilinear", align_corners=False,
                            antialias=True)
        x = v.conv1(((img - self.mean) / self.std).to(self.device, v.conv1.weight.dtype))  # (1, width, rows, cols)
        x = x.flatten(2).transpose(1, 2)
        pos = v.positional_embedding.to(x.dtype)
        side = round((pos.shape[0] - 1) ** 0.5)
        grid_pos = F.interpolate(pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2), size=(rows, cols),
                                 mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(rows * cols, -1)
        cls = v.class_embedding.to(x.dtype).reshape(1, 1, -1) + pos[:1]
        x = v.ln_pre(torch.cat([cls, x + grid_pos], dim=1))
        blocks = v.transformer.resblocks
        for block in blocks[:-1]:
            x = block(x)
        last, width = blocks[-1], x.shape[-1]
        values = F.linear(last.ln_1(x), last.attn.in_proj_weight[2 * width:], last.attn.in_proj_bias[2 * width:])
        x = v.ln_post(last.attn.out_proj(values)[:, 1:])
        return F.normalize((x @ v.proj).float(), dim=-1).reshape(rows, cols, -1).cpu()


def pool_patches(features: torch.Tensor, mask_ids: np.ndarray) -> torch.Tensor:
    """(rows, cols, D) patch features and (H, W) mask ids -> (M, D) unit embeddings: each mask's patches,
    weighted by how many of its pixels fall in each (exact area weights, no upsampled feature map)."""
    rows, cols, dim = features.shape
    h, w = mask_ids.shape
    n = int(mask_ids.max()) + 1 if mask_ids.size and mask_ids.max() >= 0 else 0
    if n == 0:
        return torch.zeros(0, dim)
    py = (np.arange(h) * rows // h)[:, None]
    px = (np.arange(w) * cols // w)[None, :]
    patch = (py * cols + px)[mask_ids >= 0]
    weights = np.zeros((n, rows * cols), np.float32)
    np.add.at(weights, (mask_ids[mask_ids >= 0], patch), 1.0)
    return F.normalize(torch.from_numpy(weights) @ features.reshape(-1, dim), dim=-1)


class ClipDenseSource:
    """``clip_dense``: Felzenszwalb segments of colour + depth, each embedded from one dense CLIP pass."""

    def __init__(self, embedder: DenseCLIPEmbedder, max_masks: int = 64, **segmentation) -> None:
        self.embedder, self.max_masks, self.segmentation = embedder, max_masks, segmentation

    def __call__(self, frame: Frame) -> MaskEmbeddings:
        ids = largest_masks(felzenszwalb_masks(frame, **self.segmentation), self.max_masks)
        return MaskEmbeddings(torch.from_numpy(ids), pool_patches(self.embedder(frame.rgb), ids))


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
