"""2D semantic sources: frame -> class-agnostic masks + one unit embedding per mask.

Every source returns a :class:`MaskEmbeddings`. ``SimulatedTeacher`` stands in for SAM + CLIP on synthetic
scenes with ground truth: it reproduces CLIP's typical failures (a fraction of masks get the wrong class,
differently in every view; ragged boundaries; objects split in pieces), deterministically per seed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from clipgs.data.frame import Frame

STUFF = ("wall", "floor", "ceiling")  # classes without one place to point at (SAM splits them, 3D scores skip them)


@dataclass
class MaskEmbeddings:
    """mask_ids: (H, W) int64, -1 = no mask; embeddings: (M, D) unit vectors, row m for mask id m.

    classes: optional (M,) class index each mask was given (simulated teacher only; for evaluation).
    """

    mask_ids: Tensor
    embeddings: Tensor
    classes: Tensor | None = None

    def __post_init__(self) -> None:
        if self.mask_ids.dim() != 2:
            raise ValueError(f"mask_ids must be (H, W), got {tuple(self.mask_ids.shape)}")
        if self.mask_ids.numel() and int(self.mask_ids.max()) >= len(self.embeddings):
            raise ValueError("a mask id has no embedding row")


@dataclass
class TeacherCorruption:
    """How the simulated teacher errs (printed with every result)."""

    wrong_fraction: float = 0.3  # masks given a wrong class, independently per view
    boundary_noise: float = 0.3  # probability that a boundary pixel takes its neighbour's mask
    split_fraction: float = 0.2  # masks split in two (over-segmentation)
    seed: int = 0

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items())


class SimulatedTeacher:
    """Masks from ground-truth instances, embeddings = text embeddings of (sometimes wrong) class names.

    class_embeddings: (C, D) unit text embeddings of the scene's classes (row = class id; row 0 unused).
    """

    def __init__(self, class_embeddings: Tensor, corruption: TeacherCorruption | None = None) -> None:
        self.class_embeddings = class_embeddings
        self.corruption = corruption or TeacherCorruption()

    def __call__(self, frame: Frame) -> MaskEmbeddings:
        if frame.instances is None or frame.labels is None:
            raise ValueError("the simulated teacher needs ground-truth labels and instances (a synthetic scene)")
        c = self.corruption
        rng = np.random.default_rng([c.seed, frame.index])  # per view: errors differ between views
        inst, labels = frame.instances, frame.labels
        ids = np.full(inst.shape, -1, np.int64)
        classes = []
        u = np.mgrid[0:inst.shape[0], 0:inst.shape[1]][1]
        for k in np.unique(inst):
            if k == 0:
                continue
            where = inst == k
            cls = int(np.bincount(labels[where]).argmax())
            if cls == 0:
                continue
            parts = [where]
            if rng.random() < c.split_fraction and where.sum() > 20:
                cut = np.median(u[where])
                parts = [where & (u <= cut), where & (u > cut)]
            for part in parts:
                given = cls
                if rng.random() < c.wrong_fraction:
                    others = [x for x in range(1, len(self.class_embeddings)) if x != cls]
                    given = int(rng.choice(others))
                ids[part] = len(classes)
                classes.append(given)
        if c.boundary_noise > 0:
            ids = self._ragged(ids, rng)
        emb = self.class_embeddings[torch.as_tensor(classes, dtype=torch.long)] if classes else \
            self.class_embeddings[:0]
        return MaskEmbeddings(torch.from_numpy(ids), emb.clone(), torch.as_tensor(classes, dtype=torch.long))

    def _ragged(self, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Boundary pixels take the id of a random 4-neighbour with probability ``boundary_noise``."""
        out = ids.copy()
        h, w = ids.shape
        dy, dx = [(0, 1), (0, -1), (1, 0), (-1, 0)][rng.integers(4)]
        shifted = ids[np.clip(np.arange(h) + dy, 0, h - 1)][:, np.clip(np.arange(w) + dx, 0, w - 1)]
        boundary = shifted != ids
        flip = boundary & (rng.random(ids.shape) < self.corruption.boundary_noise)
        out[flip] = shifted[flip]
        return out
