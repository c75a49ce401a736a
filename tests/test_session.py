"""MappingSession: the ROS node's logic, driven with real ROS 2 message classes (rosbags), no rclpy."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from clipgs.data.dataset import open_dataset
from clipgs.data.ros_messages import image_from_array
from clipgs.data.ros_stream import StreamSettings
from clipgs.mapping import load_ply
from clipgs.mapping.config import MapperConfig
from clipgs.session import PARAMETER_DESCRIPTIONS, MappingSession, NodeSettings, all_parameters, split_parameters
from tests.ros_helpers import Image, camera_info, header

ROOT = Path(__file__).resolve().parents[1]


def messages(frame, t):
    color = image_from_array(frame.rgb, "rgb8", header(t), Image)
    mm = np.round(frame.depth * 1000).astype(np.uint16)
    return color, image_from_array(mm, "16UC1", header(t), Image), camera_info(frame.K, frame.width, frame.height, t)


def make_session(tmp_path, **node):
    mapper = MapperConfig(iters_per_keyframe=2, w_ssim=0.0)
    return MappingSession(mapper, StreamSettings(), NodeSettings(autosave_path=str(tmp_path / "auto.ply"), **node))


def test_frames_flow_to_map_render_cloud_and_autosave(synth_dir, tmp_path):
    ds = open_dataset(synth_dir)
    session = make_session(tmp_path, max_cloud_points=500)
    color, depth, info = messages(ds[0], 1.0)
    assert session.on_images(color, depth, ds[0].world_from_camera) == "bad_message"  # no camera_info yet
    assert "no camera_info" in next(iter(session.counters.bad_messages))
    assert session.render() is None and session.save_map()[0] is False
    session.on_camera_info(info)
    for k in range(4):
        c, d, _ = messages(ds[k], 1.0 + k)
        assert session.on_images(c, d, ds[k].world_from_camera) == "submitted"
        session.worker.wait_idle(60)
    assert session.on_images(c, d, None) == "no_pose" and session.counters.no_pose == 1
    rgb, depth_img = session.render()
    assert rgb.shape == (60, 80, 3) and rgb.dtype == np.uint8 and np.std(rgb) > 10
    # Rendered from the latest camera (frame 3): far closer to its depth than to another view's.
    err_latest, err_other = (np.median(np.abs(depth_img - ds[k].depth)) for k in (3, 0))
    assert err_latest < 0.1 and err_latest < 0.5 * err_other
    points, colours = session.cloud()
    assert points.shape == (500, 3) and colours.dtype == np.uint8
    line = session.stats_line()
    assert "pairs 6" in line and "mapped 4" in line and "no pose 1" in line and "bad messages 1" in line
    ok, msg = session.save_map(str(tmp_path / "m.ply"))
    assert ok and len(load_ply(tmp_path / "m.ply")) > 0 and "saved" in msg
    ok, msg = session.save_map("/proc/forbidden/m.ply")
    assert not ok and "cannot write" in msg
    assert "saved" in session.shutdown()
    assert (tmp_path / "auto.ply").is_file()


def test_query_answers_clearly(synth_dir, tmp_path):
    session = make_session(tmp_path)
    assert not session.query("   ").success and "empty label" in session.query("").message
    assert "map is empty" in session.query("chair").message
    ds = open_dataset(synth_dir)
    c, d, info = messages(ds[0], 1.0)
    session.on_camera_info(info)
    session.on_images(c, d, ds[0].world_from_camera)
    session.worker.wait_idle(60)
    result = session.query("chair")
    assert not result.success and "no semantic attributes" in result.message
    session.shutdown(autosave=False)


def test_pose_topic_is_interpolated_by_stamp(tmp_path):
    session = make_session(tmp_path)
    a, b = np.eye(4), np.eye(4)
    b[:3, 3] = [1.0, 0.0, 0.0]
    session.on_pose(1.0, a)
    session.on_pose(2.0, b)
    np.testing.assert_allclose(session.pose_from_topic(1.25)[:3, 3], [0.25, 0, 0])
    assert session.pose_from_topic(5.0) is None
    session.shutdown(autosave=False)


def test_bad_camera_info_is_counted_not_raised(tmp_path):
    session = make_session(tmp_path)
    session.on_camera_info(camera_info(np.zeros((3, 3)), 10, 10))
    assert "calibrated" in next(iter(session.counters.bad_messages))
    session.shutdown(autosave=False)


def test_every_parameter_has_a_description_and_the_params_file_matches():
    params = all_parameters()
    assert set(params) == set(PARAMETER_DESCRIPTIONS)
    shipped = yaml.safe_load((ROOT / "config" / "mapping.yaml").read_text())["clipgs_mapping"]["ros__parameters"]
    assert shipped == params
    mapper, stream, node = split_parameters({**params, "iters_per_keyframe": 3, "render_rate_hz": 1})
    assert mapper.iters_per_keyframe == 3 and node.render_rate_hz == 1.0 and stream.map_frame == "map"
    with pytest.raises(ValueError, match="unknown parameter"):
        split_parameters({"colour_topic": "/x"})
