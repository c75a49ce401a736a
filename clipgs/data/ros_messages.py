"""ROS message <-> numpy conversions that need no ROS: they read and build messages by field name.

Inputs are any objects with the ROS 2 field names (rclpy messages, rosbags messages, simple namespaces).
Builders take the message class to instantiate (``Image``, ``PointCloud2``, ...) and a ``byte_container``
for ``uint8[]`` fields: rosbags wants a numpy array (the default), rclpy is fastest with
``lambda b: array.array('B', b)``. Malformed input raises :class:`MessageError` (a ValueError).
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from clipgs.data.images import to_uint8
from clipgs.errors import MessageError
from clipgs.geometry import pose_from_translation_quat, rotmat_to_quat

log = logging.getLogger(__name__)

COLOR_ENCODINGS = {"rgb8": (3, [0, 1, 2]), "bgr8": (3, [2, 1, 0]), "rgba8": (4, [0, 1, 2]),
                   "bgra8": (4, [2, 1, 0]), "mono8": (1, [0, 0, 0])}
DEPTH_ENCODINGS = {"16UC1": np.dtype(np.uint16), "mono16": np.dtype(np.uint16), "32FC1": np.dtype(np.float32)}


def _message_reader(fn: Callable) -> Callable:
    """A reader of message objects: a missing field or a field of the wrong type is a MessageError naming the
    reader, never an AttributeError / TypeError from deep inside (a malformed message must not crash a node)."""

    @functools.wraps(fn)
    def read(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MessageError:
            raise
        except (AttributeError, TypeError, ValueError, IndexError, KeyError, OverflowError) as exc:
            raise MessageError(f"malformed message for {fn.__name__}: {type(exc).__name__}: {exc}") from exc

    return read


def _default_bytes(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype=np.uint8).copy()


@_message_reader
def stamp_to_seconds(stamp: Any) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def _image_array(msg: Any, channels: int, dtype: np.dtype) -> np.ndarray:
    """The pixel array (H, W[, C]) of an Image, honouring ``step`` padding and ``is_bigendian``."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise MessageError(f"image has zero size ({w}x{h})")
    row_bytes = w * channels * dtype.itemsize
    if step < row_bytes:
        raise MessageError(f"image step {step} is smaller than a row ({w} px x {channels * dtype.itemsize} B = "
                           f"{row_bytes} B) for encoding '{msg.encoding}'")
    data = bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data.tobytes()
    if len(data) < step * h:
        raise MessageError(f"image data has {len(data)} bytes, expected {step * h} (step {step} x height {h})")
    rows = np.frombuffer(data, dtype=np.uint8, count=step * h).reshape(h, step)[:, :row_bytes]
    order = ">" if msg.is_bigendian else "<"
    arr = np.ascontiguousarray(rows).view(dtype.newbyteorder(order) if dtype.itemsize > 1 else dtype)
    arr = arr.reshape(h, w, channels).astype(dtype)  # native byte order
    return arr[..., 0] if channels == 1 else arr


@_message_reader
def rgb_from_image(msg: Any) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) -> (H, W, 3) uint8 RGB."""
    enc = str(msg.encoding)
    if enc not in COLOR_ENCODINGS:
        raise MessageError(f"colour encoding '{enc}' unsupported; expected one of {sorted(COLOR_ENCODINGS)}")
    channels, order = COLOR_ENCODINGS[enc]
    arr = _image_array(msg, channels, np.dtype(np.uint8))
    if channels == 1:
        return np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr[..., order])


@_message_reader
def depth_from_image(msg: Any, depth_scale: float | None = None) -> np.ndarray:
    """sensor_msgs/Image depth -> (H, W) float32 metres, 0 = invalid (NaN, inf, <= 0 and 16-bit 0 alike).

    16UC1 / mono16 are millimetres unless ``depth_scale`` (units per metre) says otherwise; 32FC1 is metres.
    """
    enc = str(msg.encoding)
    if enc not in DEPTH_ENCODINGS:
        raise MessageError(f"depth encoding '{enc}' unsupported; expected 16UC1 (mm) or 32FC1 (m)")
    arr = _image_array(msg, 1, DEPTH_ENCODINGS[enc]).astype(np.float32)
    if enc != "32FC1":
        scale = 1000.0 if depth_scale is None else float(depth_scale)
        if not (np.isfinite(scale) and scale > 0):
            raise MessageError(f"depth_scale must be a positive number of units per metre, got {depth_scale}")
        arr /= np.float32(scale)
    return np.where(np.isfinite(arr) & (arr > 0), arr, np.float32(0.0)).astype(np.float32)


def image_from_array(array: np.ndarray, encoding: str, header: Any, image_cls: type,
                     byte_container: Callable[[bytes], Any] = _default_bytes) -> Any:
    """Build a sensor_msgs/Image of ``image_cls`` from a numpy array (little-endian, no row padding).

    Accepts rgb8 / bgr8 (H, W, 3) uint8, rgba8 / bgra8 (H, W, 4), mono8 (H, W) uint8, mono16 / 16UC1 (H, W)
    uint16 and 32FC1 (H, W) float32.
    """
    expected = {"rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
                "mono8": (np.uint8, 1), "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1), "32FC1": (np.float32, 1)}
    if encoding not in expected:
        raise MessageError(f"cannot build an image with encoding '{encoding}'; expected one of {sorted(expected)}")
    dtype, channels = expected[encoding]
    array = np.asarray(array)
    shape_ok = array.ndim == 2 if channels == 1 else (array.ndim == 3 and array.shape[2] == channels)
    if array.dtype != dtype or not shape_ok or array.shape[0] == 0 or array.shape[1] == 0:
        raise MessageError(f"{encoding} needs a non-empty {dtype.__name__} array with {channels} channel(s), "
                           f"got {array.dtype} {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    h, w = array.shape[:2]
    return image_cls(header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                     step=w * channels * array.itemsize, data=byte_container(array.tobytes()))


_warned_distortion = False


@_message_reader
def intrinsics_from_camera_info(msg: Any) -> tuple[np.ndarray, int, int]:
    """sensor_msgs/CameraInfo -> (K (3, 3) float64, width, height). Warns once if the image is distorted."""
    global _warned_distortion
    K = np.asarray(list(msg.k), dtype=np.float64)
    if K.size != 9:
        raise MessageError(f"CameraInfo.k must have 9 numbers, got {K.size}")
    K = K.reshape(3, 3)
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise MessageError("CameraInfo.k is not a calibrated pinhole matrix (fx, fy must be finite and > 0); "
                           "is the camera_info topic publishing an uncalibrated camera?")
    w, h = int(msg.width), int(msg.height)
    if w <= 0 or h <= 0:
        raise MessageError(f"CameraInfo has zero size ({w}x{h})")
    d = np.asarray(list(msg.d), dtype=np.float64)
    if d.size and np.any(np.abs(d) > 1e-9) and not _warned_distortion:
        _warned_distortion = True
        log.warning("camera_info reports distortion (%s %s); clipgs assumes rectified images",
                    msg.distortion_model, np.round(d, 4).tolist())
    return K, w, h


def _quat_wxyz(q: Any) -> np.ndarray:
    quat = np.array([q.w, q.x, q.y, q.z], dtype=np.float64)
    big = np.abs(quat).max()  # scale first: the norm of (1e200, 0, 0, 0) overflows to inf
    if not np.all(np.isfinite(quat)) or big < 1e-9:
        raise MessageError(f"invalid rotation quaternion (x, y, z, w) = {quat[[1, 2, 3, 0]].tolist()}")
    quat = quat / big
    return quat / np.linalg.norm(quat)


@_message_reader
def matrix_from_pose(pose: Any) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4."""
    p = np.array([pose.position.x, pose.position.y, pose.position.z], dtype=np.float64)
    if not np.all(np.isfinite(p)):
        raise MessageError(f"invalid position {p.tolist()}")
    return pose_from_translation_quat(p, _quat_wxyz(pose.orientation))


def position_and_quaternion(matrix: np.ndarray) -> tuple[list[float], list[float]]:
    """4x4 rigid -> ([x, y, z], [qx, qy, qz, qw]): a geometry_msgs/Pose's position and orientation fields."""
    w, x, y, z = rotmat_to_quat(matrix[:3, :3])
    return [float(v) for v in matrix[:3, 3]], [float(x), float(y), float(z), float(w)]


def seconds_to_stamp(seconds: float) -> tuple[int, int]:
    """Seconds -> (sec, nanosec) of a builtin_interfaces/Time (nanosec in [0, 1e9))."""
    sec = int(np.floor(seconds))
    return sec, min(round((seconds - sec) * 1e9), 999_999_999)


@_message_reader
def matrix_from_transform(transform: Any) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4."""
    t = np.array([transform.translation.x, transform.translation.y, transform.translation.z], dtype=np.float64)
    if not np.all(np.isfinite(t)):
        raise MessageError(f"invalid translation {t.tolist()}")
    return pose_from_translation_quat(t, _quat_wxyz(transform.rotation))


def pointcloud2_from_points(points: np.ndarray, colors: np.ndarray, header: Any, cloud_cls: type, field_cls: type,
                            byte_container: Callable[[bytes], Any] = _default_bytes) -> Any:
    """XYZ + packed RGB PointCloud2 (x, y, z float32 and ``rgb`` float32 holding 0x00RRGGBB, as RViz reads it).

    points: (N, 3) metres; colors: (N, 3) uint8 or float in [0, 1].
    """
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise MessageError(f"points must be (N, 3), got {points.shape}")
    colors = np.asarray(colors)
    if colors.shape != points.shape:
        raise MessageError(f"colors must be (N, 3) like points, got {colors.shape}")
    if colors.dtype != np.uint8:
        colors = to_uint8(colors)
    packed = (colors[:, 0].astype(np.uint32) << 16) | (colors[:, 1].astype(np.uint32) << 8) | colors[:, 2]
    record = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
    record["x"], record["y"], record["z"], record["rgb"] = points[:, 0], points[:, 1], points[:, 2], packed
    float32 = 7  # sensor_msgs/PointField.FLOAT32
    fields = [field_cls(name=name, offset=4 * i, datatype=float32, count=1) for i, name in enumerate("xyz")]
    fields.append(field_cls(name="rgb", offset=12, datatype=float32, count=1))
    return cloud_cls(header=header, height=1, width=len(points), fields=fields, is_bigendian=False, point_step=16,
                     row_step=16 * len(points), data=byte_container(record.tobytes()), is_dense=True)
