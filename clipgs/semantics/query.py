"""Text queries: relevancy per pixel and per Gaussian, a 2D mask, and the object's place in 3D (the grouping into
objects is :mod:`clipgs.semantics.instances`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from clipgs.data.frame import Camera
from clipgs.data.images import colorize_unit, titled_row, to_uint8, write_image
from clipgs.mapping.gaussian_map import GaussianMap
from clipgs.semantics.coherence import rendered_segments, segment_mean
from clipgs.semantics.instances import QueryInstance, group_instances
from clipgs.semantics.sac import SemanticDecoder

CANONICAL_NEGATIVES = ("object", "things", "stuff", "texture")


def negative_names(vocabulary: list[str], label: str, mode: str = "vocabulary") -> list[str]:
    """The texts a query is contrasted with: the map's other class names ("vocabulary", index 0 = void is left
    out), or CLIP-LERF's canonical "object, things, stuff, texture" ("canonical", or a map with no other class)."""
    if mode not in ("vocabulary", "canonical"):
        raise ValueError(f"negatives must be 'vocabulary' or 'canonical', got {mode!r}")
    others = [c for c in vocabulary[1:] if c.strip().lower() != label.strip().lower()]
    return others if mode == "vocabulary" and others else list(CANONICAL_NEGATIVES)


def relevancy(decoded: Tensor, query: Tensor, negatives: Tensor, tau: float = 0.01) -> Tensor:
    """LERF-style relevancy in [0, 1]: min over negatives of softmax([q.x, n.x] / tau)[q].

    decoded: (..., D) unit features; query: (D,) unit; negatives: (K, D) unit.
    """
    return relevancy_from_cosines(decoded @ torch.cat([query[None], negatives]).T, tau)


def relevancy_from_cosines(cosines: Tensor, tau: float = 0.01) -> Tensor:
    """(..., 1 + K) cosines with [query, negatives...] -> (...,) relevancy in [0, 1] (see ``relevancy``).

    softmax([q, n] / tau)[q] = sigmoid((q - n) / tau) falls as n rises, so its minimum over the negatives is the
    one at the closest negative: one sigmoid a pixel, not K (the same values; 640x480 with 199 negatives: 263 ->
    12 ms, with 15: 22 -> 4)."""
    return torch.sigmoid((cosines[..., 0] - cosines[..., 1:].amax(dim=-1)) / tau)


@dataclass
class QueryAnswer:
    """mask/relevancy (H, W) for a view; selected (N,) Gaussians; their 3D instances, strongest first.

    centroid / box_min / box_max are the strongest instance's (None when nothing matched).
    """

    mask: np.ndarray
    relevancy: np.ndarray
    score: float
    selected: np.ndarray
    centroid: np.ndarray | None
    box_min: np.ndarray | None
    box_max: np.ndarray | None
    instances: list[QueryInstance] = field(default_factory=list)
    gaussian_relevancy: np.ndarray | None = field(default=None, repr=False)  # (N,) every Gaussian's, 0..1
    rgb: np.ndarray | None = field(default=None, repr=False)  # (H, W, 3) uint8: the view's colour render



def footprint_areas(gmap: GaussianMap) -> Tensor:
    """(N,) m²: the 1-sigma ellipse of each Gaussian's two largest axes (the surface a flat splat covers)."""
    largest = torch.sort(gmap.log_scales, dim=1).values[:, 1:]
    return torch.pi * largest.sum(dim=1).exp()



def write_query_images(answer: QueryAnswer, out_dir: str | Path, rgb: np.ndarray | None = None,
                       label: str = "") -> list[Path]:
    """mask.png (255 = match) and relevancy.png (turbo, 0..1) at the view's size; with the view's ``rgb``
    (H, W, 3 uint8) also overlay.png, for people: render | relevancy over it | mask over it, titled, >= 320 px each."""
    out_dir = Path(out_dir)
    paths = [write_image(out_dir / "mask.png", (answer.mask * 255).astype(np.uint8)),
             write_image(out_dir / "relevancy.png", colorize_unit(answer.relevancy))]
    if rgb is not None:
        grey = np.repeat(rgb.mean(axis=2, keepdims=True), 3, axis=2)  # colours of the query stand out on grey
        heat = 0.8 * answer.relevancy[..., None]
        blended = (grey * (1 - heat) + colorize_unit(answer.relevancy) * heat).astype(np.uint8)
        tint = (0.35 * grey + 0.65 * np.array([0, 230, 90])).astype(np.uint8)
        masked = np.where(answer.mask[..., None], tint, (0.7 * grey).astype(np.uint8))
        name = f"'{label}'" if label else "query"
        paths.append(write_image(out_dir / "overlay.png", titled_row(
            [rgb, blended, masked], ["render", f"relevancy of {name}",
                                     f"mask: {int(answer.mask.sum())} px, score {answer.score:.2f}"])))
    return paths


def query_map(gmap: GaussianMap, decoder: SemanticDecoder, query: Tensor, negatives: Tensor, camera: Camera | None,
              threshold: float = 0.5, tau: float = 0.01, instance_voxel_m: float = 0.05,
              coherent: bool = False) -> QueryAnswer:
    """Answer one text query (already embedded) on a map: in a view (if a camera is given) and in 3D.

    coherent: the view's relevancy is averaged inside each segment of its rendered colour + depth before the
    threshold (objects come out whole, no speckle; see :mod:`clipgs.semantics.coherence`). Off by default: on
    the room's demo map it scored 0.51 IoU / 0.65 localisation against 0.54 / 0.68 per pixel.

    In 3D the matching Gaussians (relevancy > threshold, opacity > 0.5) are split into instances, objects
    that are not connected at ``instance_voxel_m`` resolution (two chairs give two boxes, not one spanning both),
    with centroids weighted by matching surface. On the room (realistic teacher, 3 seeds) surface weights and
    joined pieces took 3D precision / recall from 0.52 / 0.62 to 0.67 / 0.67 (count weights put the rug's
    centroid 0.5 m off, in its densely mapped half; a cabinet came back as 4-7 pieces).
    """
    if not torch.isfinite(query).all() or not torch.isfinite(negatives).all():
        raise ValueError("query or negative embeddings are not finite")
    texts = torch.cat([query[None], negatives])
    with torch.no_grad():
        if camera is not None:
            out = gmap.render(camera)
            rel = relevancy_from_cosines(decoder.similarity(out.semantics, texts), tau)
            if coherent:
                rel = segment_mean(rel, rendered_segments(out, scale_with_size=True))
            rel = torch.where(out.alpha > 0.5, rel, torch.zeros_like(rel))
            rel_np = rel.cpu().numpy().astype(np.float32)
            rgb = to_uint8(out.rgb.clamp(0, 1).cpu().numpy())
        else:
            rel_np, rgb = np.zeros((0, 0), np.float32), None
        mask = rel_np > threshold
        score = float(rel_np[mask].mean()) if mask.any() else 0.0
        per_gaussian = relevancy_from_cosines(decoder.similarity(gmap.semantics, texts), tau)
        selected = ((per_gaussian > threshold) & (gmap.opacities > 0.5)).cpu().numpy()
        weights = (per_gaussian * gmap.opacities * footprint_areas(gmap)).cpu().numpy()[selected]
    instances = group_instances(gmap.means.detach().cpu().numpy()[selected], weights, instance_voxel_m)
    rows, gaussian_rel = np.nonzero(selected)[0], per_gaussian.cpu().numpy()
    for inst in instances:
        inst.indices = rows[inst.indices]
        inst.score = float(gaussian_rel[inst.indices].mean())
    if not instances:
        return QueryAnswer(mask, rel_np, score, selected, None, None, None, [], gaussian_rel, rgb)
    best = instances[0]
    return QueryAnswer(mask, rel_np, score, selected, best.centroid, best.box_min, best.box_max, instances,
                       gaussian_rel, rgb)
