"""ScanNet exported with the official SensReader (color/, depth/, pose/, intrinsic/, label-filt/)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from clipgs.data.dataset import SequenceDataset, read_classes
from clipgs.data.frame import Camera, Frame
from clipgs.data.images import read_image, resize, resize_depth
from clipgs.geometry import is_rigid, scale_intrinsics


class ScanNetDataset(SequenceDataset):
    """ScanNet scene: colour (1296x968 jpg) is resized to ``size`` (default: the 640x480 depth size).

    Frames whose pose is non-finite (ScanNet marks lost tracking with -inf) are skipped.
    label_map: optional {raw label-filt id: class id}; ids not in the map become 0. Without it, raw ids pass.
    """

    name = "scannet"

    def __init__(self, root: str | Path, *, size: tuple[int, int] | None = None, depth_scale: float = 1000.0,
                 label_map: dict[int, int] | None = None, test_every: int = 10, test_offset: int = 5) -> None:
        self.root = Path(root)
        ids = sorted(int(p.stem) for p in (self.root / "color").glob("*.jpg"))
        if not ids:
            raise FileNotFoundError(f"{self.root}/color: no .jpg frames")
        self.poses, self.ids = [], []
        for i in ids:
            pose = np.loadtxt(self.root / "pose" / f"{i}.txt").reshape(4, 4)
            if is_rigid(pose, tol=1e-3):
                self.poses.append(pose)
                self.ids.append(i)
        self.skipped = len(ids) - len(self.ids)
        K_color = np.loadtxt(self.root / "intrinsic" / "intrinsic_color.txt")[:3, :3]
        cw, ch = read_image(self.root / "color" / f"{ids[0]}.jpg").shape[1::-1]
        dh, dw = read_image(self.root / "depth" / f"{ids[0]}.png").shape[:2]
        self.size = tuple(size) if size else (dw, dh)
        self.K = scale_intrinsics(K_color, self.size[0] / cw, self.size[1] / ch)
        self.depth_scale = float(depth_scale)
        if not (np.isfinite(self.depth_scale) and self.depth_scale > 0):
            raise ValueError(f"depth_scale must be a positive number of PNG units per metre, got {depth_scale}")
        self.label_map = label_map
        self.classes = read_classes(self.root / "classes.txt")
        self.has_labels = (self.root / "label-filt").is_dir()
        self.test_every, self.test_offset = test_every, test_offset

    def __len__(self) -> int:
        return len(self.ids)

    def camera_at(self, i: int) -> Camera:
        return Camera(self.K, *self.size, self.poses[i])

    def load(self, i: int) -> Frame:
        fid = self.ids[i]
        w, h = self.size
        rgb = resize(read_image(self.root / "color" / f"{fid}.jpg"), w, h, nearest=False)
        depth = resize_depth(read_image(self.root / "depth" / f"{fid}.png").astype(np.float32) / self.depth_scale,
                             w, h)
        labels = None
        if self.has_labels:
            raw = resize(read_image(self.root / "label-filt" / f"{fid}.png").astype(np.int32), w, h, nearest=True)
            if self.label_map is not None:
                lut = np.zeros(max(int(raw.max()), max(self.label_map, default=0)) + 1, np.int32)
                for k, v in self.label_map.items():
                    lut[k] = v
                raw = lut[raw]
            labels = raw
        return Frame(rgb, depth, self.K, self.poses[i], timestamp=float(fid), labels=labels, index=i)
