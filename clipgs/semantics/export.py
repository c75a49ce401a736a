"""Exports other tools open: class-coloured 3DGS PLYs with a legend, per-Gaussian labels, one PLY per object.

Every PLY written here is the standard 3DGS layout (see :mod:`clipgs.mapping.ply`), so SuperSplat and other
3DGS viewers open it; ``class_id`` / ``confidence`` are extra vertex properties that such viewers skip.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clipgs.data.images import label_palette, legend_image, stack_rows, text_band, write_image
from clipgs.mapping.gaussian_map import GaussianMap, rgb_to_sh0
from clipgs.mapping.ply import save_ply
from clipgs.semantics.model import SemanticModel
from clipgs.semantics.query import QueryAnswer

LOGIT_SCALE = 100.0  # CLIP's: softmax over cosines x 100 gives the class confidence


@dataclass
class GaussianLabels:
    """class_ids: (N,) int32 vocabulary rows (>= 1; 0 = void only for an empty vocabulary);
    confidence: (N,) float32 softmax probability of that class over the vocabulary, 0..1."""

    class_ids: np.ndarray
    confidence: np.ndarray

    def counts(self, n_classes: int) -> np.ndarray:
        """(n_classes,) Gaussians per class."""
        return np.bincount(self.class_ids, minlength=n_classes)

    def shares(self, n_classes: int) -> list[tuple[int, float]]:
        """(class id, share of the Gaussians in %) of the classes present, most Gaussians first."""
        counts = self.counts(n_classes)
        total = max(1, int(counts.sum()))
        return [(int(c), 100.0 * counts[c] / total) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]


@torch.no_grad()
def gaussian_labels(gmap: GaussianMap, model: SemanticModel, chunk: int = 262_144) -> GaussianLabels:
    """Each Gaussian's class: its decoded attribute's nearest class text embedding (as rendered labels are)."""
    if model.vocabulary_embeddings is None or len(model.vocabulary) < 2:
        raise ValueError("the map's semantic model has no class vocabulary to label Gaussians with")
    if gmap.sem_dim == 0:
        raise ValueError("the map has no semantic attributes (mapped without --semantics)")
    texts = model.vocabulary_embeddings[1:].to(gmap.semantics.device)
    ids, conf = [], []
    for start in range(0, len(gmap), chunk):
        cos = model.decoder.similarity(gmap.semantics[start:start + chunk], texts)
        p = torch.softmax(cos * LOGIT_SCALE, dim=-1)
        best = p.max(dim=-1)
        ids.append(best.indices + 1)
        conf.append(best.values)
    if not ids:
        return GaussianLabels(np.zeros(0, np.int32), np.zeros(0, np.float32))
    return GaussianLabels(torch.cat(ids).cpu().numpy().astype(np.int32),
                          torch.cat(conf).cpu().numpy().astype(np.float32))


def class_coloured(gmap: GaussianMap, labels: GaussianLabels) -> GaussianMap:
    """A copy of the map whose colours are the class colours (:func:`label_palette`) and with no attributes."""
    rgb = torch.from_numpy(label_palette()[labels.class_ids].astype(np.float32) / 255.0).to(gmap.sh0)
    return GaussianMap(gmap.means.detach(), gmap.quats.detach(), gmap.log_scales.detach(),
                       gmap.opacity_logits.detach(), rgb_to_sh0(rgb), gmap.semantics.new_zeros(len(gmap), 0))


def legend(labels: GaussianLabels, vocabulary: list[str], width: int = 640) -> np.ndarray:
    """uint8 legend image of the classes present, most Gaussians first, with each class's share."""
    shares = labels.shares(len(vocabulary))
    names = [f"{vocabulary[c]} ({share:.0f}%)" for c, share in shares]
    return legend_image(names, label_palette()[[c for c, _ in shares]], width)


def label_properties(labels: GaussianLabels) -> dict[str, np.ndarray]:
    """The extra PLY properties of ``--labels``: class_id (int32, vocabulary row) and confidence (float32)."""
    return {"class_id": labels.class_ids.astype(np.int32), "confidence": labels.confidence.astype(np.float32)}


def export_semantic_colours(gmap: GaussianMap, model: SemanticModel, out: str | Path,
                            with_labels: bool = False) -> list[Path]:
    """``out`` (.ply): the map in class colours, standard 3DGS layout (+ class_id/confidence with ``with_labels``);
    ``<out>_legend.png`` and ``<out>_classes.txt`` (class id, name, Gaussians) beside it."""
    out = Path(out)
    labels = gaussian_labels(gmap, model)
    ply = save_ply(class_coloured(gmap, labels), out, label_properties(labels) if with_labels else None)
    title = text_band(640, f"{out.name}: {len(gmap)} Gaussians by class")
    png = write_image(out.with_name(out.stem + "_legend.png"), stack_rows(title, legend(labels, model.vocabulary)))
    return [ply, png, write_class_table(labels, model.vocabulary, out.with_name(out.stem + "_classes.txt"))]


def write_class_table(labels: GaussianLabels, vocabulary: list[str], path: Path) -> Path:
    """class_id, name, Gaussians, colour per vocabulary class: the key to a ``class_id`` property."""
    counts, palette = labels.counts(len(vocabulary)), label_palette()
    lines = ["# class_id name gaussians colour_rgb"] + [
        f"{c} {name.replace(' ', '_')} {counts[c]} {','.join(str(int(v)) for v in palette[c])}"
        for c, name in enumerate(vocabulary)]
    path.write_text("\n".join(lines) + "\n")
    return path


def export_labels(gmap: GaussianMap, model: SemanticModel, out: str | Path) -> list[Path]:
    """``out`` (.ply): the map as it is (colours, attributes) plus class_id and confidence per Gaussian."""
    out = Path(out)
    labels = gaussian_labels(gmap, model)
    return [save_ply(gmap, out, label_properties(labels)),
            write_class_table(labels, model.vocabulary, out.with_name(out.stem + "_classes.txt"))]


def export_query_objects(gmap: GaussianMap, answer: QueryAnswer, label: str, out_dir: str | Path) -> list[Path]:
    """One standard 3DGS PLY per object of a query answer (its Gaussians only) and ``objects.json``
    (label, score, centroid, box, size in metres, Gaussians, file), strongest object first."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "".join(ch if ch.isalnum() else "_" for ch in label.strip())[:40] or "object"
    paths, objects = [], []
    for k, inst in enumerate(answer.instances, start=1):
        part = gmap.detach().select(torch.as_tensor(inst.indices, dtype=torch.long, device=gmap.means.device))
        part = GaussianMap(**{**part.tensors(), "semantics": part.semantics[:, :0]})
        path = save_ply(part, out_dir / f"{stem}_{k}.ply")
        paths.append(path)
        objects.append({"label": label, "rank": k, "score": round(float(inst.score), 4),
                        "gaussians": int(inst.gaussians), "centroid_m": _r(inst.centroid),
                        "box_min_m": _r(inst.box_min), "box_max_m": _r(inst.box_max),
                        "size_m": _r(inst.box_max - inst.box_min), "file": path.name})
    doc = {"query": label, "frame": "map", "units": "metres", "objects": objects}
    paths.append(out_dir / "objects.json")
    paths[-1].write_text(json.dumps(doc, indent=2) + "\n")
    return paths


def _r(v: np.ndarray) -> list[float]:
    return [round(float(x), 4) for x in v]
