"""The common dataset interface, the held-out split, and format detection."""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from clipgs.data.frame import Camera, Frame

log = logging.getLogger(__name__)


def split_indices(n: int, test_every: int = 10, test_offset: int = 5) -> tuple[list[int], list[int]]:
    """(train, test) frame indices: every ``test_every``-th frame starting at ``test_offset`` is held out.

    The default holds out frames 5, 15, 25, ...: the first frame (which seeds an online map) trains,
    and each test view lies between training views. ``test_every`` = 0 holds nothing out.
    """
    if test_every < 0 or (test_every and not 0 <= test_offset < test_every):
        raise ValueError(f"bad split: test_every={test_every}, test_offset={test_offset}")
    if test_every == 0:
        return list(range(n)), []
    test = [i for i in range(n) if i % test_every == test_offset]
    held = set(test)
    return [i for i in range(n) if i not in held], test


class SequenceDataset(ABC):
    """An ordered sequence of posed RGB-D frames read lazily from disk (memory stays flat)."""

    name: str = "dataset"
    root: Path
    classes: list[str] | None = None  # class names by id when labels exist; id 0 = void / ignored
    test_every: int = 10
    test_offset: int = 5
    poses_from_odometry: bool = False  # the poses drift (odometry), not a ground-truth trajectory

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load(self, i: int) -> Frame:
        """Read frame ``i`` (0 <= i < len)."""

    def __getitem__(self, i: int) -> Frame:
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} out of range for {self.name} with {len(self)} frames")
        return self.load(i % len(self))

    def camera_at(self, i: int) -> Camera:
        """Frame ``i``'s posed camera; datasets that hold their poses answer without reading images."""
        return self[i].camera

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self.load(i)

    def readable_frames(self, indices: Iterable[int], skipped: Counter, strict: bool = False) -> Iterator[Frame]:
        """Frames ``indices`` in order; one that cannot be read (missing or truncated file, wrong size, bad
        pose row, ...) is logged in one line, counted in ``skipped`` by reason and passed over, so a long run
        never dies of one bad file. ``strict``: raise ValueError at the first such frame instead."""
        for i in indices:
            try:
                frame = self[i]
            except Exception as exc:  # any reader failure costs this frame only
                if strict:
                    raise ValueError(f"frame {i} of {self.root} unreadable ({type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0][:200]}); without --strict it is skipped") from exc
                skipped[f"unreadable ({type(exc).__name__})"] += 1
                log.warning("frame %d of %s unreadable, skipped: %s", i, self.root, str(exc).splitlines()[0][:200])
                continue
            yield frame

    @property
    def split(self) -> tuple[list[int], list[int]]:
        return split_indices(len(self), self.test_every, self.test_offset)

    @property
    def train_indices(self) -> list[int]:
        return self.split[0]

    @property
    def test_indices(self) -> list[int]:
        return self.split[1]

    def summary(self) -> str:
        f = self.load(0)
        tr, te = self.split
        cls = f"{len(self.classes)} classes" if self.classes else "no labels"
        return (f"{self.name} '{self.root}': {len(self)} frames ({len(tr)} train / {len(te)} test), "
                f"{f.width}x{f.height}, {cls}")


def read_classes(path: Path) -> list[str] | None:
    """classes.txt: one class name per line, line i = class id i (0 = void). None if absent."""
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text().splitlines()]
    while names and not names[-1]:
        names.pop()
    return names


def open_dataset(path: str | Path, **options) -> SequenceDataset:
    """Open a dataset folder, detecting its layout: Replica (Semantic-NeRF), ScanNet or TUM RGB-D."""
    from clipgs.data.replica import ReplicaDataset
    from clipgs.data.scannet import ScanNetDataset
    from clipgs.data.tum import TumDataset

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if (root / "traj_w_c.txt").is_file():
        return ReplicaDataset(root, **options)
    if (root / "pose").is_dir() and (root / "color").is_dir():
        return ScanNetDataset(root, **options)
    if (root / "rgb.txt").is_file() and (root / "depth.txt").is_file():
        return TumDataset(root, **options)
    raise ValueError(
        f"{root}: unknown dataset layout; expected Replica/Semantic-NeRF (traj_w_c.txt, rgb/, depth/), "
        "ScanNet (color/, depth/, pose/, intrinsic/) or TUM RGB-D (rgb.txt, depth.txt, groundtruth.txt)"
    )
