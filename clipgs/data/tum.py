"""TUM RGB-D benchmark sequences (rgb.txt, depth.txt, groundtruth.txt), associated by timestamp."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from clipgs.data.dataset import SequenceDataset
from clipgs.data.frame import Camera, Frame
from clipgs.data.images import read_image, resize, resize_depth
from clipgs.geometry import pose_from_translation_quat, scale_intrinsics

# Published calibrations (fx, fy, cx, cy) of the Kinects used per sequence family; others use the ROS default.
TUM_INTRINSICS = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
}
ROS_DEFAULT_INTRINSICS = (525.0, 525.0, 319.5, 239.5)


def read_tum_list(path: Path) -> list[tuple[float, list[str]]]:
    """Rows of a TUM list file: (timestamp, remaining fields); '#' lines are comments."""
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            parts = line.split()
            rows.append((float(parts[0]), parts[1:]))
    return rows


def associate(a: list[float], b: list[float], max_dt: float) -> list[tuple[int, int]]:
    """Pair each timestamp in ``a`` with the nearest in ``b`` (both sorted) when within ``max_dt`` seconds."""
    if not b:
        return []
    bs = np.asarray(b)
    pairs = []
    for i, t in enumerate(a):
        j = int(np.clip(np.searchsorted(bs, t), 1, len(bs) - 1)) if len(bs) > 1 else 0
        if len(bs) > 1 and abs(bs[j - 1] - t) <= abs(bs[j] - t):
            j -= 1
        if abs(bs[j] - t) <= max_dt:
            pairs.append((i, j))
    return pairs


class TumDataset(SequenceDataset):
    """TUM RGB-D: each RGB image is paired with the nearest depth and ground-truth pose (within ``max_dt``).

    intrinsics: (fx, fy, cx, cy); by default chosen from 'freiburg1/2/3' in the folder name.
    depth_scale: 5000 PNG units per metre (TUM's convention).
    """

    name = "tum"

    def __init__(self, root: str | Path, *, size: tuple[int, int] | None = None, depth_scale: float = 5000.0,
                 intrinsics: tuple[float, float, float, float] | None = None, max_dt: float = 0.02,
                 test_every: int = 10, test_offset: int = 5) -> None:
        self.root = Path(root)
        rgb = read_tum_list(self.root / "rgb.txt")
        depth = read_tum_list(self.root / "depth.txt")
        gt_file = self.root / "groundtruth.txt"
        if not gt_file.is_file():
            raise FileNotFoundError(f"{self.root}: missing groundtruth.txt (poses are required for mapping)")
        gt = read_tum_list(gt_file)
        rgb_depth = associate([t for t, _ in rgb], [t for t, _ in depth], max_dt)
        rgb_gt = dict(associate([t for t, _ in rgb], [t for t, _ in gt], max_dt))
        self.entries = []
        for i, j in rgb_depth:
            if i in rgb_gt:
                tx, ty, tz, qx, qy, qz, qw = (float(v) for v in gt[rgb_gt[i]][1][:7])
                pose = pose_from_translation_quat(np.array([tx, ty, tz]), np.array([qw, qx, qy, qz]))
                self.entries.append((rgb[i][0], rgb[i][1][0], depth[j][1][0], pose))
        if not self.entries:
            raise ValueError(f"{self.root}: no rgb/depth/pose triple within {max_dt} s of each other")
        if intrinsics is None:
            family = next((k for k in TUM_INTRINSICS if k in self.root.name), None)
            intrinsics = TUM_INTRINSICS[family] if family else ROS_DEFAULT_INTRINSICS
        fx, fy, cx, cy = intrinsics
        w, h = read_image(self.root / self.entries[0][1]).shape[1::-1]
        self.size = tuple(size) if size else (w, h)
        self.K = scale_intrinsics(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), self.size[0] / w, self.size[1] / h)
        self.depth_scale = float(depth_scale)
        if not (np.isfinite(self.depth_scale) and self.depth_scale > 0):
            raise ValueError(f"depth_scale must be a positive number of PNG units per metre, got {depth_scale}")
        self.test_every, self.test_offset = test_every, test_offset

    def __len__(self) -> int:
        return len(self.entries)

    def camera_at(self, i: int) -> Camera:
        return Camera(self.K, *self.size, self.entries[i][3])

    def load(self, i: int) -> Frame:
        stamp, rgb_path, depth_path, pose = self.entries[i]
        w, h = self.size
        rgb = resize(read_image(self.root / rgb_path), w, h, nearest=False)
        depth = resize_depth(read_image(self.root / depth_path).astype(np.float32) / self.depth_scale, w, h)
        return Frame(rgb, depth, self.K, pose, timestamp=stamp, index=i)
