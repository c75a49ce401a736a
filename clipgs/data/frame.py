"""Frame and Camera: the unit of data every stage consumes."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clipgs.errors import FrameError
from clipgs.geometry import invert_rigid, is_rigid


@dataclass(frozen=True)
class Camera:
    """A posed pinhole camera.

    K: (3, 3) float64 intrinsics, OpenCV convention (integer pixel coordinates are pixel centres).
    width, height: image size in pixels.
    world_from_camera: (4, 4) float64 rigid pose, OpenCV optical frame (x right, y down, z forward).
    """

    K: np.ndarray
    width: int
    height: int
    world_from_camera: np.ndarray = field(default_factory=lambda: np.eye(4))

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64)
        T = np.asarray(self.world_from_camera, dtype=np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise FrameError(f"intrinsics must be a finite (3, 3) matrix with fx, fy > 0, got {K.tolist()}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise FrameError(f"image size must be positive, got {self.width}x{self.height}")
        if not np.allclose(K[2], [0.0, 0.0, 1.0], atol=1e-9):
            raise FrameError(f"intrinsics must have last row (0, 0, 1), got {K[2].tolist()}")
        if not is_rigid(T):
            raise FrameError("world_from_camera must be a finite rigid 4x4 transform (orthonormal R, det +1)")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "world_from_camera", T)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @property
    def camera_from_world(self) -> np.ndarray:
        """(4, 4) view matrix: world points -> camera frame."""
        return invert_rigid(self.world_from_camera)

    @property
    def position(self) -> np.ndarray:
        """(3,) camera centre in the world frame, metres."""
        return self.world_from_camera[:3, 3].copy()

    def scaled(self, width: int, height: int) -> Camera:
        """The same camera for an image resized to ``width`` x ``height``."""
        from clipgs.geometry import scale_intrinsics

        K = scale_intrinsics(self.K, width / self.width, height / self.height)
        return Camera(K, width, height, self.world_from_camera)


@dataclass
class Frame:
    """One posed RGB-D observation.

    rgb: (H, W, 3) uint8.
    depth: (H, W) float32 metres, 0 = invalid (NaN, inf and negative values are set to 0 on construction).
    K: (3, 3) float64 intrinsics (OpenCV convention).
    world_from_camera: (4, 4) float64 pose, OpenCV optical frame.
    timestamp: seconds.
    labels: optional (H, W) int32 semantic class ids, 0 = unlabelled.
    index: position in the source sequence.
    instances: optional (H, W) int32 object instance ids, 0 = none (ground truth, for simulated teachers).
    """

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    world_from_camera: np.ndarray
    timestamp: float = 0.0
    labels: np.ndarray | None = None
    index: int = 0
    instances: np.ndarray | None = None

    def __post_init__(self) -> None:
        rgb = np.asarray(self.rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise FrameError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        depth = np.asarray(self.depth, dtype=np.float32)
        if depth.shape != rgb.shape[:2]:
            raise FrameError(f"depth shape {depth.shape} does not match rgb {rgb.shape[:2]}")
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0)).astype(np.float32)
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != rgb.shape[:2]:
                raise FrameError(f"labels shape {labels.shape} does not match rgb {rgb.shape[:2]}")
            self.labels = labels.astype(np.int32)
        if self.instances is not None:
            instances = np.asarray(self.instances)
            if instances.shape != rgb.shape[:2]:
                raise FrameError(f"instances shape {instances.shape} does not match rgb {rgb.shape[:2]}")
            self.instances = instances.astype(np.int32)
        self.rgb, self.depth = rgb, depth
        # Camera validates K and the pose.
        cam = Camera(self.K, rgb.shape[1], rgb.shape[0], self.world_from_camera)
        self.K, self.world_from_camera = cam.K, cam.world_from_camera
        self.timestamp = float(self.timestamp)

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def camera(self) -> Camera:
        return Camera(self.K, self.width, self.height, self.world_from_camera)

    def resized(self, width: int) -> Frame:
        """The frame at ``width`` pixels (height keeps the aspect ratio; intrinsics scaled): colour bilinear,
        depth edge-aware at the scaled pixel centres (:func:`clipgs.data.images.resize_depth`), labels and
        instances nearest. Itself when already that wide."""
        from clipgs.data.images import resize, resize_depth

        if width == self.width:
            return self
        height = max(1, round(self.height * width / self.width))
        cam = self.camera.scaled(width, height)

        def nearest(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else resize(a, width, height, nearest=True)

        return Frame(resize(self.rgb, width, height, nearest=False), resize_depth(self.depth, width, height), cam.K,
                     self.world_from_camera, self.timestamp, nearest(self.labels), self.index, nearest(self.instances))
