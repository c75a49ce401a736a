"""Text queries: relevancy per pixel and per Gaussian, a 2D mask, and the object's place in 3D."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from clipgs.data.frame import Camera
from clipgs.data.images import colorize_unit, write_image
from clipgs.mapping.gaussian_map import GaussianMap
from clipgs.semantics.sac import SemanticDecoder

CANONICAL_NEGATIVES = ("object", "things", "stuff", "texture")


def relevancy(decoded: Tensor, query: Tensor, negatives: Tensor, tau: float = 0.01) -> Tensor:
    """LERF-style relevancy in [0, 1]: min over negatives of softmax([q.x, n.x] / tau)[q].

    decoded: (..., D) unit features; query: (D,) unit; negatives: (K, D) unit.
    """
    q = decoded @ query / tau
    n = decoded @ negatives.T / tau
    return torch.sigmoid(q[..., None] - n).min(dim=-1).values


@dataclass
class QueryAnswer:
    """mask/relevancy (H, W) for a view; selected (N,) Gaussians; centroid / box in the map frame (m)."""

    mask: np.ndarray
    relevancy: np.ndarray
    score: float
    selected: np.ndarray
    centroid: np.ndarray | None
    box_min: np.ndarray | None
    box_max: np.ndarray | None


def write_query_images(answer: QueryAnswer, out_dir: str | Path, rgb: np.ndarray | None = None) -> list[Path]:
    """mask.png (255 = match) and relevancy.png (turbo, 0..1); overlay.png too when the view's rgb is given."""
    out_dir = Path(out_dir)
    paths = [write_image(out_dir / "mask.png", (answer.mask * 255).astype(np.uint8)),
             write_image(out_dir / "relevancy.png", colorize_unit(answer.relevancy))]
    if rgb is not None:
        tint = (0.5 * rgb + 0.5 * np.array([255, 40, 40])).astype(np.uint8)
        paths.append(write_image(out_dir / "overlay.png", np.where(answer.mask[..., None], tint, rgb)))
    return paths


def query_map(gmap: GaussianMap, decoder: SemanticDecoder, query: Tensor, negatives: Tensor, camera: Camera | None,
              threshold: float = 0.5, tau: float = 0.01) -> QueryAnswer:
    """Answer one text query (already embedded) on a map: in a view (if a camera is given) and in 3D."""
    if not torch.isfinite(query).all() or not torch.isfinite(negatives).all():
        raise ValueError("query or negative embeddings are not finite")
    with torch.no_grad():
        if camera is not None:
            out = gmap.render(camera)
            rel = relevancy(decoder(out.image[..., 3:]), query, negatives, tau)
            rel = torch.where(out.alpha > 0.5, rel, torch.zeros_like(rel))
            rel_np = rel.cpu().numpy().astype(np.float32)
        else:
            rel_np = np.zeros((0, 0), np.float32)
        mask = rel_np > threshold
        score = float(rel_np[mask].mean()) if mask.any() else 0.0
        per_gaussian = relevancy(decoder(gmap.semantics), query, negatives, tau)
        selected = ((per_gaussian > threshold) & (gmap.opacities > 0.5)).cpu().numpy()
    centroid = box_min = box_max = None
    if selected.any():
        pts = gmap.means.detach().cpu().numpy()[selected]
        w = gmap.opacities.detach().cpu().numpy()[selected]
        centroid = (pts * w[:, None]).sum(0) / w.sum()
        box_min, box_max = np.percentile(pts, 2, axis=0), np.percentile(pts, 98, axis=0)  # robust to strays
    return QueryAnswer(mask, rel_np, score, selected, centroid, box_min, box_max)
