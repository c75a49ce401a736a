"""Replica renders in the Semantic-NeRF layout (also what ``clipgs synth`` writes).

    root/rgb/rgb_{i}.png                       colour, 8-bit
    root/depth/depth_{i}.png                   uint16, metres * depth_scale (1000 by default)
    root/semantic_class/semantic_class_{i}.png class ids (optional)
    root/semantic_instance/semantic_instance_{i}.png  instance ids (optional)
    root/traj_w_c.txt                          one row of 16 numbers per frame: world_from_camera, row-major
    root/classes.txt                           class names, line i = id i, 0 = void (optional)
    root/intrinsics.txt                        3x3 K (optional; otherwise a 90 degree horizontal FoV)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from clipgs.data.dataset import SequenceDataset, read_classes
from clipgs.data.frame import Camera, Frame, FrameError
from clipgs.data.images import read_image, resize, resize_depth
from clipgs.geometry import intrinsics_from_hfov, scale_intrinsics


class ReplicaDataset(SequenceDataset):
    """Semantic-NeRF-style Replica sequence.

    size: optional (width, height) to resize to (colour bilinear, depth and labels nearest).
    depth_scale: PNG units per metre. hfov_deg: used when no intrinsics.txt is present.
    """

    name = "replica"

    def __init__(self, root: str | Path, *, size: tuple[int, int] | None = None, depth_scale: float = 1000.0,
                 hfov_deg: float = 90.0, test_every: int = 10, test_offset: int = 5,
                 trajectory: str = "traj_w_c.txt") -> None:
        """trajectory: the pose file, e.g. ``gt_traj_w_c.txt`` (the true poses of a scene whose traj_w_c.txt
        carries odometry drift) to score a map against the truth."""
        self.root = Path(root)
        traj_file = self.root / trajectory
        if not traj_file.is_file():
            raise FileNotFoundError(f"{self.root}: missing {trajectory} (Semantic-NeRF Replica layout)")
        traj = np.loadtxt(traj_file, ndmin=2)
        if traj.shape[1] != 16:
            raise ValueError(f"{traj_file}: expected 16 numbers per row (a 4x4 pose), got {traj.shape[1]}")
        self.poses = traj.reshape(-1, 4, 4)
        self.poses_from_odometry = trajectory == "traj_w_c.txt" and (self.root / "gt_traj_w_c.txt").is_file()
        first = self.root / "rgb" / "rgb_0.png"
        h, w = read_image(first).shape[:2]
        k_file = self.root / "intrinsics.txt"
        self.native_K = np.loadtxt(k_file).reshape(3, 3) if k_file.is_file() else intrinsics_from_hfov(w, h, hfov_deg)
        self.native_size = (w, h)
        self.size = tuple(size) if size else (w, h)
        self.K = scale_intrinsics(self.native_K, self.size[0] / w, self.size[1] / h)
        self.depth_scale = float(depth_scale)
        if not (np.isfinite(self.depth_scale) and self.depth_scale > 0):
            raise ValueError(f"depth_scale must be a positive number of PNG units per metre, got {depth_scale}")
        self.classes = read_classes(self.root / "classes.txt")
        self.has_labels = (self.root / "semantic_class").is_dir()
        self.has_instances = (self.root / "semantic_instance").is_dir()
        self.test_every, self.test_offset = test_every, test_offset

    def __len__(self) -> int:
        return len(self.poses)

    def camera_at(self, i: int) -> Camera:
        return Camera(self.K, *self.size, self.poses[i])

    def load(self, i: int) -> Frame:
        w, h = self.size
        rgb = read_image(self.root / "rgb" / f"rgb_{i}.png")
        depth_raw = read_image(self.root / "depth" / f"depth_{i}.png")
        if depth_raw.dtype == np.uint8 or depth_raw.ndim != 2:
            raise FrameError(f"{self.root}: depth_{i}.png is {depth_raw.dtype} {depth_raw.shape}, expected a 16-bit "
                             "single-channel PNG (millimetres); an 8-bit image is not depth")
        if rgb.shape[:2] != depth_raw.shape[:2]:
            raise FrameError(f"{self.root}: frame {i} rgb {rgb.shape[:2]} and depth {depth_raw.shape[:2]} differ")
        depth = resize_depth(depth_raw.astype(np.float32) / self.depth_scale, w, h)
        labels = None
        if self.has_labels:
            labels = resize(read_image(self.root / "semantic_class" / f"semantic_class_{i}.png"), w, h, nearest=True)
        instances = None
        if self.has_instances:
            path = self.root / "semantic_instance" / f"semantic_instance_{i}.png"
            instances = resize(read_image(path).astype(np.int32), w, h, nearest=True)
        return Frame(resize(rgb, w, h, nearest=False), depth, self.K, self.poses[i], timestamp=float(i),
                     labels=labels, index=i, instances=instances)
