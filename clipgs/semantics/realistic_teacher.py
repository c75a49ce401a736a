"""A simulated SAM + CLIP teacher that errs the way real ones do: systematically, not per view at random.

What real 2D teachers get wrong, and what :class:`RealisticTeacher` reproduces on a synthetic scene with ground
truth (every knob seeded and printed with each result, :class:`RealisticCorruption`):

- **Confusions that repeat across views.** Each class has a fixed confusion partner (a cabinet reads as
  "table", a pillow as "sofa"); a share of each class's objects lean towards their partner in most views, so
  multi-view voting cannot undo it.
- **Embeddings are image embeddings, not text embeddings.** e = normalise(a·t_true + b·t_other + σ·n + g): a
  mix of the true class and the partner (or a random class), noise n, and a modality-gap offset g shared by
  every mask. Noise grows for small and far masks.
- **Per-view random errors**, fewer than the uniform teacher's.
- **Granularity.** Small objects merge into what they rest on in some views (the mask then reads as the
  support), objects split, walls / floors / ceilings come in pieces, tiny masks are dropped.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from clipgs.data.frame import Frame
from clipgs.semantics.sources import STUFF, MaskEmbeddings


@dataclass
class RealisticCorruption:
    """How the realistic teacher errs (printed with every result; see the module docstring)."""

    confusion_share: float = 0.35  # objects of a class that lean to the class's confusion partner ...
    confusion_views: float = 0.8  # ... in this share of the views that see them
    lean: float = 0.65  # weight of the other class in a leaning embedding (a = 1 - lean)
    random_wrong: float = 0.1  # masks leaning to a random class in one view
    noise: float = 0.4  # embedding noise (norm, relative to a unit text embedding) of a large, near mask
    small_area: float = 0.01  # masks smaller than this image fraction get up to 3x the noise
    far_m: float = 3.0  # masks farther than this get up to 2x the noise
    gap: float = 0.5  # norm of the modality-gap offset every embedding shares
    merge_fraction: float = 0.4  # per view: a small object merged into the object it rests on
    stuff_split: float = 0.5  # per view: a wall / floor / ceiling mask cut into 2-3 pieces
    split_fraction: float = 0.15  # per view: an object mask cut in two
    min_pixels: int = 12  # smaller masks are dropped
    seed: int = 0

    def describe(self) -> str:
        return "realistic: " + ", ".join(f"{k}={v}" for k, v in asdict(self).items())


class RealisticTeacher:
    """Masks from ground-truth instances with SAM-like granularity errors; CLIP-like embeddings.

    class_embeddings: (C, D) unit text embeddings (row = class id, row 0 void); class_names: the C names
    (walls, floors and ceilings are split like SAM splits them).
    """

    def __init__(self, class_embeddings: Tensor, class_names: list[str],
                 corruption: RealisticCorruption | None = None) -> None:
        self.class_embeddings, self.class_names = class_embeddings, list(class_names)
        self.corruption = c = corruption or RealisticCorruption()
        n = len(class_embeddings)
        rng = np.random.default_rng([c.seed, 7])
        self.partner = np.zeros(n, np.int64)  # a fixed confusion partner per class (never itself, never void)
        order = rng.permutation(np.arange(1, n))
        for i, cls in enumerate(order):
            self.partner[cls] = order[(i + 1) % len(order)] if n > 2 else cls
        gap = rng.standard_normal(class_embeddings.shape[1])
        self.gap = torch.from_numpy(c.gap * gap / np.linalg.norm(gap)).to(class_embeddings)
        self.stuff = {i for i, name in enumerate(self.class_names) if name in STUFF}

    def leans(self, instance: int) -> bool:
        """Whether this object is one of its class's systematically confused ones (fixed per scene)."""
        return bool(np.random.default_rng([self.corruption.seed, 11, instance]).random()
                    < self.corruption.confusion_share)

    def _support(self, inst: np.ndarray, where: np.ndarray, k: int) -> int:
        """The instance under an object's mask (what it rests on), 0 if none."""
        ys, xs = np.nonzero(where)
        below = inst[np.clip(ys + max(2, (ys.max() - ys.min()) // 4), 0, inst.shape[0] - 1), xs]
        below = below[(below != k) & (below != 0)]
        return int(np.bincount(below).argmax()) if below.size else 0

    def __call__(self, frame: Frame) -> MaskEmbeddings:
        if frame.instances is None or frame.labels is None:
            raise ValueError("the simulated teacher needs ground-truth labels and instances (a synthetic scene)")
        c = self.corruption
        rng = np.random.default_rng([c.seed, frame.index])
        inst, labels = frame.instances, frame.labels
        h, w = inst.shape
        u = np.mgrid[0:h, 0:w][1]
        owner = {}  # instance -> class
        for k in np.unique(inst):
            if k:
                cls = int(np.bincount(labels[inst == k]).argmax())
                if cls:
                    owner[int(k)] = cls
        target = {k: k for k in owner}  # an instance merged into its support takes the support's mask
        for k, cls in owner.items():
            where = inst == k
            if cls not in self.stuff and where.mean() < c.small_area and rng.random() < c.merge_fraction:
                support = self._support(inst, where, k)
                if support in owner:
                    target[k] = support
        ids = np.full(inst.shape, -1, np.int64)
        rows: list[tuple[int, int, np.ndarray]] = []  # (true class, instance, mask)
        for k, cls in owner.items():
            if target[k] != k:
                continue
            where = np.isin(inst, [j for j, t in target.items() if t == k])
            pieces = 1
            if cls in self.stuff and rng.random() < c.stuff_split:
                pieces = int(rng.integers(2, 4))
            elif rng.random() < c.split_fraction and where.sum() > 40:
                pieces = 2
            cuts = np.quantile(u[where], np.linspace(0, 1, pieces + 1)[1:-1]) if pieces > 1 else []
            part_of = np.searchsorted(cuts, u) if pieces > 1 else np.zeros_like(u)
            for p in range(pieces):
                part = where & (part_of == p)
                if part.sum() >= c.min_pixels:
                    rows.append((cls, k, part))
        if not rows:
            return MaskEmbeddings(torch.from_numpy(ids), self.class_embeddings[:0].clone(),
                                  torch.zeros(0, dtype=torch.long))
        T = self.class_embeddings
        emb = []
        for m, (cls, k, part) in enumerate(rows):
            ids[part] = m
            other, b = cls, 0.0
            if self.leans(k) and rng.random() < c.confusion_views:
                other, b = int(self.partner[cls]), c.lean
            elif rng.random() < c.random_wrong:
                other, b = int(rng.choice([x for x in range(1, len(T)) if x != cls])), c.lean
            area = part.mean()
            depth = frame.depth[part]
            far = float(np.median(depth[depth > 0])) if (depth > 0).any() else 0.0
            sigma = c.noise * float(np.clip(np.sqrt(c.small_area / max(area, 1e-9)), 1, 3)) * \
                float(np.clip(far / c.far_m, 1, 2))
            noise = torch.from_numpy(rng.standard_normal(T.shape[1])).to(T)
            e = (1 - b) * T[cls] + b * T[other] + sigma * noise / noise.norm() + self.gap
            emb.append(e / e.norm())
        embeddings = torch.stack(emb)
        given = (embeddings @ T[1:].T).argmax(-1) + 1  # what the teacher "says", read as evaluation reads it
        return MaskEmbeddings(torch.from_numpy(ids), embeddings, given)
