"""Message conversions against real ROS 2 message classes (rosbags), including malformed messages."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipgs.data.ros_messages import (
    MessageError,
    depth_from_image,
    image_from_array,
    intrinsics_from_camera_info,
    matrix_from_pose,
    matrix_from_transform,
    pointcloud2_from_points,
    position_and_quaternion,
    rgb_from_image,
    seconds_to_stamp,
    stamp_to_seconds,
)
from clipgs.geometry import look_at, quat_to_rotmat, rotmat_to_quat
from tests.ros_helpers import (
    TYPESTORE,
    CameraInfo,
    Image,
    Point,
    PointCloud2,
    PointField,
    Pose,
    Quaternion,
    Transform,
    Vector3,
    camera_info,
    header,
)

RGB = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)


def raw_image(array: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False):
    """An Image with ``pad`` bytes of row padding, optionally big-endian."""
    a = np.asarray(array)
    if bigendian:
        a = a.astype(a.dtype.newbyteorder(">"))
    rows = a.reshape(a.shape[0], -1).view(np.uint8)
    rows = np.concatenate([rows, np.full((a.shape[0], pad), 0xAB, np.uint8)], axis=1)
    return Image(header=header(1.5), height=a.shape[0], width=a.shape[1], encoding=encoding,
                 is_bigendian=int(bigendian), step=rows.shape[1], data=rows.reshape(-1).copy())


@pytest.mark.parametrize("pad", [0, 3])
def test_colour_encodings(pad):
    assert np.array_equal(rgb_from_image(raw_image(RGB, "rgb8", pad)), RGB)
    assert np.array_equal(rgb_from_image(raw_image(RGB[..., ::-1], "bgr8", pad)), RGB)
    rgba = np.concatenate([RGB, np.full((5, 7, 1), 9, np.uint8)], axis=2)
    assert np.array_equal(rgb_from_image(raw_image(rgba, "rgba8", pad)), RGB)
    assert np.array_equal(rgb_from_image(raw_image(rgba[..., [2, 1, 0, 3]], "bgra8", pad)), RGB)
    mono = rgb_from_image(raw_image(RGB[..., 0], "mono8", pad))
    assert mono.shape == (5, 7, 3) and np.array_equal(mono[..., 2], RGB[..., 0])


@pytest.mark.parametrize("bigendian", [False, True])
def test_depth_encodings_and_invalid_values(bigendian):
    mm = np.array([[0, 1000, 2500], [65535, 1, 300]], np.uint16)
    d = depth_from_image(raw_image(mm, "16UC1", pad=2, bigendian=bigendian))
    np.testing.assert_allclose(d, mm / 1000.0, rtol=1e-6)
    assert d.dtype == np.float32 and d[0, 0] == 0
    m = np.array([[1.5, np.nan, -1.0], [np.inf, 0.0, 2.25]], np.float32)
    d = depth_from_image(raw_image(m, "32FC1", bigendian=bigendian))
    assert d.tolist() == [[1.5, 0.0, 0.0], [0.0, 0.0, 2.25]]
    np.testing.assert_allclose(depth_from_image(raw_image(mm, "16UC1"), depth_scale=5000.0), mm / 5000.0, rtol=1e-6)


def test_malformed_images_raise_clear_errors():
    good = raw_image(RGB, "rgb8")
    with pytest.raises(MessageError, match="colour encoding '8UC3' unsupported"):
        rgb_from_image(Image(header=good.header, height=5, width=7, encoding="8UC3", is_bigendian=0, step=21,
                             data=good.data))
    with pytest.raises(MessageError, match="depth encoding 'rgb8' unsupported; expected 16UC1"):
        depth_from_image(good)
    with pytest.raises(MessageError, match="step 20 is smaller than a row"):
        rgb_from_image(Image(header=good.header, height=5, width=7, encoding="rgb8", is_bigendian=0, step=20,
                             data=good.data))
    with pytest.raises(MessageError, match="data has 100 bytes, expected 105"):
        rgb_from_image(Image(header=good.header, height=5, width=7, encoding="rgb8", is_bigendian=0, step=21,
                             data=good.data[:100]))
    with pytest.raises(MessageError, match="zero size"):
        rgb_from_image(Image(header=good.header, height=0, width=7, encoding="rgb8", is_bigendian=0, step=21,
                             data=np.zeros(0, np.uint8)))


def test_image_round_trip_through_cdr():
    for array, enc, back in ((RGB, "rgb8", rgb_from_image), (np.full((4, 6), 1234, np.uint16), "16UC1",
                                                             lambda m: (depth_from_image(m) * 1000).round())):
        msg = image_from_array(array, enc, header(2.0), Image)
        wire = TYPESTORE.serialize_cdr(msg, "sensor_msgs/msg/Image")
        again = TYPESTORE.deserialize_cdr(wire, "sensor_msgs/msg/Image")
        assert np.array_equal(back(again), array)
    with pytest.raises(MessageError, match="mono8 needs"):
        image_from_array(np.zeros((3, 3), np.float32), "mono8", header(), Image)


@settings(max_examples=150, deadline=None)
@given(height=st.integers(-2, 6), width=st.integers(-2, 6), step=st.integers(-5, 40),
       encoding=st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "16UC1", "32FC1", "yuv422", ""]),
       data=st.binary(max_size=200), bigendian=st.booleans())
def test_fuzz_images_never_crash(height, width, step, encoding, data, bigendian):
    msg = Image(header=header(), height=max(height, 0), width=max(width, 0), encoding=encoding,
                is_bigendian=int(bigendian), step=max(step, 0), data=np.frombuffer(data, np.uint8).copy())
    for convert in (rgb_from_image, depth_from_image):
        try:
            out = convert(msg)
        except MessageError:
            continue
        assert out.shape[:2] == (msg.height, msg.width)
        if out.dtype == np.float32:
            assert np.all(np.isfinite(out)) and np.all(out >= 0)


def test_camera_info():
    K = np.array([[500.0, 0, 319.5], [0, 505.0, 239.5], [0, 0, 1]])
    K2, w, h = intrinsics_from_camera_info(camera_info(K, 640, 480))
    assert np.array_equal(K2, K) and (w, h) == (640, 480)
    intrinsics_from_camera_info(camera_info(K, 640, 480, d=(0.1, 0.0, 0.0, 0.0, 0.0)))  # warns, still converts
    with pytest.raises(MessageError, match="not a calibrated pinhole"):
        intrinsics_from_camera_info(camera_info(np.zeros((3, 3)), 640, 480))
    with pytest.raises(MessageError, match="zero size"):
        intrinsics_from_camera_info(camera_info(K, 0, 480))
    assert isinstance(camera_info(K, 1, 1), CameraInfo)


def test_poses_and_transforms():
    T = look_at(np.array([1.0, -2.0, 1.5]), np.zeros(3))
    w, x, y, z = rotmat_to_quat(T[:3, :3])
    pose = Pose(position=Point(x=1.0, y=-2.0, z=1.5), orientation=Quaternion(x=x, y=y, z=z, w=w))
    np.testing.assert_allclose(matrix_from_pose(pose), T, atol=1e-12)
    tf = Transform(translation=Vector3(x=1.0, y=-2.0, z=1.5), rotation=Quaternion(x=2 * x, y=2 * y, z=2 * z, w=2 * w))
    np.testing.assert_allclose(matrix_from_transform(tf), T, atol=1e-12)  # non-unit quaternions are normalised
    with pytest.raises(MessageError, match="invalid rotation quaternion"):
        matrix_from_pose(Pose(position=Point(x=0.0, y=0.0, z=0.0), orientation=Quaternion(x=0.0, y=0.0, z=0.0, w=0.0)))
    with pytest.raises(MessageError, match="invalid position"):
        matrix_from_pose(Pose(position=Point(x=np.nan, y=0.0, z=0.0), orientation=Quaternion(x=0.0, y=0.0, z=0.0,
                                                                                                 w=1.0)))
    for q in np.random.default_rng(1).normal(size=(20, 4)):
        np.testing.assert_allclose(quat_to_rotmat(rotmat_to_quat(quat_to_rotmat(q))), quat_to_rotmat(q), atol=1e-12)
    assert stamp_to_seconds(header(12.25).stamp) == pytest.approx(12.25)
    position, (qx, qy, qz, qw) = position_and_quaternion(T)  # and back: what the keyframe path publishes
    back = Pose(position=Point(x=position[0], y=position[1], z=position[2]), orientation=Quaternion(x=qx, y=qy, z=qz,
                                                                                                    w=qw))
    np.testing.assert_allclose(matrix_from_pose(back), T, atol=1e-12)
    assert seconds_to_stamp(12.25) == (12, 250_000_000) and seconds_to_stamp(3.9999999999) == (3, 999_999_999)
    assert seconds_to_stamp(-0.5) == (-1, 500_000_000)  # nanosec stays in [0, 1e9), as builtin_interfaces/Time wants


def test_pointcloud2_packs_rgb_as_rviz_reads_it():
    pts = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    cols = np.array([[255, 0, 0], [1, 2, 3]], np.uint8)
    msg = pointcloud2_from_points(pts, cols, header(), PointCloud2, PointField)
    wire = TYPESTORE.deserialize_cdr(TYPESTORE.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2"),
                                     "sensor_msgs/msg/PointCloud2")
    rec = np.frombuffer(wire.data.tobytes(), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
    assert rec["x"].tolist() == [0.0, 3.0] and [f.name for f in wire.fields] == ["x", "y", "z", "rgb"]
    assert rec["rgb"].tolist() == [0xFF0000, 0x010203] and wire.point_step == 16 and wire.width == 2
    with pytest.raises(MessageError, match="colors must be"):
        pointcloud2_from_points(pts, cols[:1], header(), PointCloud2, PointField)
