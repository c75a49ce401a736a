"""Stream pieces shared by the node and bag replay: tf buffer, pairing, frame assembly, bags end to end."""
from __future__ import annotations

import numpy as np
import pytest

from clipgs.data.dataset import open_dataset
from clipgs.data.ros_messages import MessageError, image_from_array
from clipgs.data.ros_stream import ApproxTimePairer, FrameAssembler, StreamSettings, TransformBuffer
from clipgs.data.rosbag_io import BagReplay, export_bag, is_bag
from clipgs.geometry import look_at, pose_from_translation_quat, rotmat_to_quat
from tests.ros_helpers import Image, camera_info, header


def rot_z(deg: float, t=(0.0, 0.0, 0.0)) -> np.ndarray:
    a = np.radians(deg)
    T = np.eye(4)
    T[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    T[:3, 3] = t
    return T


def test_tf_chain_interpolation_and_errors():
    buf = TransformBuffer(tolerance=0.05, max_age=10.0)
    buf.add("map", "base", 1.0, rot_z(0, (0, 0, 0)))
    buf.add("map", "base", 2.0, rot_z(90, (2, 0, 0)))
    optical = look_at(np.zeros(3), np.array([1.0, 0, 0]))  # base_from_optical: camera looking along base x
    buf.add("/base", "cam_optical", 0.0, optical, static=True)
    mid = buf.lookup("map", "cam_optical", 1.5)
    np.testing.assert_allclose(mid, rot_z(45, (1, 0, 0)) @ optical, atol=1e-12)
    np.testing.assert_allclose(buf.lookup("cam_optical", "map", 1.5) @ mid, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(buf.lookup("map", "cam_optical", 2.03), rot_z(90, (2, 0, 0)) @ optical, atol=1e-12)
    with pytest.raises(LookupError, match=r"no transform map -> base near t=2\.500"):
        buf.lookup("map", "cam_optical", 2.5)
    with pytest.raises(LookupError, match="not connected"):
        buf.lookup("map", "odom", 1.5)
    buf.add("map", "base", 30.0, rot_z(0))
    assert buf.series["base"][0] == [30.0]  # older than max_age behind the newest: dropped


def test_pairer_matches_within_slop_and_stays_bounded():
    p = ApproxTimePairer(slop=0.03, queue_size=3)
    assert p.push("color", 1.00, "c1") is None
    assert p.push("depth", 1.02, "d1") == (1.00, "c1", "d1")
    assert p.push("color", 2.00, "c2") is None
    assert p.push("depth", 2.10, "d2") is None  # too far apart
    assert p.push("color", 2.11, "c3") == (2.11, "c3", "d2")
    assert p.dropped == 1  # c2 can never pair now
    for k in range(10):
        p.push("color", 10.0 + k, f"x{k}")
    assert len(p.queues["color"]) == 3 and p.dropped == 8


def test_assembler_checks_intrinsics_and_sizes():
    K = np.array([[50.0, 0, 15.5], [0, 50.0, 11.5], [0, 0, 1]])
    rgb = np.zeros((24, 32, 3), np.uint8)
    color = image_from_array(rgb, "rgb8", header(3.0), Image)
    depth = image_from_array(np.full((24, 32), 1500, np.uint16), "16UC1", header(3.0), Image)
    asm = FrameAssembler()
    with pytest.raises(MessageError, match="no camera_info received yet"):
        asm.assemble(color, depth, np.eye(4))
    asm.set_camera_info(camera_info(K, 32, 24))
    frame = asm.assemble(color, depth, np.eye(4))
    assert frame.timestamp == 3.0 and frame.depth[0, 0] == pytest.approx(1.5) and np.array_equal(frame.K, K)
    small = image_from_array(np.full((12, 16), 1500, np.uint16), "16UC1", header(3.0), Image)
    with pytest.raises(MessageError, match="aligned to the colour camera"):
        asm.assemble(color, small, np.eye(4))
    asm.set_camera_info(camera_info(K, 64, 48))
    with pytest.raises(MessageError, match="camera_info is for 64x48"):
        asm.assemble(color, depth, np.eye(4))


def test_stream_settings_from_ros_params(tmp_path):
    (tmp_path / "p.yaml").write_text("clipgs_mapping:\n  ros__parameters:\n    color_topic: /rgb\n"
                                     "    sync_slop_s: 0.02\n    iters_per_keyframe: 4\n")
    s = StreamSettings.from_yaml(tmp_path / "p.yaml", ignore_unknown=True)  # the node's file holds every group
    assert s.color_topic == "/rgb" and s.sync_slop_s == 0.02 and s.map_frame == "map"
    with pytest.raises(ValueError, match=r"setting sync_slop_s must be >= 0\.0"):
        StreamSettings(sync_slop_s=-1)


def test_bag_replay_reproduces_the_dataset(synth_dir, tmp_path):
    ds = open_dataset(synth_dir)
    bag = export_bag(ds, tmp_path / "bag", indices=ds.train_indices)
    assert is_bag(bag) and is_bag(bag / "bag.mcap") and not is_bag(synth_dir)
    replay = BagReplay(bag)
    frames = list(replay.frames())
    assert len(frames) == len(ds.train_indices) and sum(replay.errors.values()) == 0
    for frame, i in zip(frames, ds.train_indices):
        ref = ds[i]
        np.testing.assert_allclose(frame.world_from_camera, ref.world_from_camera, atol=1e-6)
        assert np.array_equal(frame.rgb, ref.rgb) and np.abs(frame.depth - ref.depth).max() < 1e-3
    from rosbags.interfaces import QosDurability, QosReliability
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:  # what `ros2 bag play` republishes with: tf2's static listener needs transient-local
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    assert all(len(q) == 1 and q[0].reliability == QosReliability.RELIABLE for q in qos.values()), qos
    assert qos["/tf_static"][0].durability == QosDurability.TRANSIENT_LOCAL
    assert qos["/tf"][0].durability == QosDurability.VOLATILE and qos["/tf"][0].depth == 100
    w, x, y, z = rotmat_to_quat(frames[0].world_from_camera[:3, :3])
    np.testing.assert_allclose(pose_from_translation_quat(frames[0].world_from_camera[:3, 3], [w, x, y, z]),
                               frames[0].world_from_camera, atol=1e-12)


def test_mapping_a_bag_matches_mapping_the_folder(synth_dir, tmp_path, capsys):
    from clipgs.cli import main
    from clipgs.eval.evaluate import evaluate
    from clipgs.mapping import load_ply

    ds = open_dataset(synth_dir)
    assert main(["export-bag", str(synth_dir), "--out", str(tmp_path / "bag"), "--train-only"]) == 0
    cfg = tmp_path / "c.yaml"
    cfg.write_text("iters_per_keyframe: 5\nw_ssim: 0.0\n")
    assert main(["map", str(tmp_path / "bag"), "--out", str(tmp_path / "bag.ply"), "--config", str(cfg)]) == 0
    assert main(["map", str(synth_dir), "--out", str(tmp_path / "dir.ply"), "--config", str(cfg)]) == 0
    assert "mapped 22 frames" in capsys.readouterr().out
    from_bag = evaluate(load_ply(tmp_path / "bag.ply"), ds, progress=False)
    from_dir = evaluate(load_ply(tmp_path / "dir.ply"), ds, progress=False)
    assert from_dir["psnr_db"] > 18.0
    assert abs(from_bag["psnr_db"] - from_dir["psnr_db"]) < 0.3
    assert abs(from_bag["depth_l1_m"] - from_dir["depth_l1_m"]) < 0.01


def test_bag_with_wrong_topics_is_a_clear_error(synth_dir, tmp_path, capsys):
    from clipgs.cli import main

    export_bag(open_dataset(synth_dir), tmp_path / "bag", indices=[0, 1])
    (tmp_path / "t.yaml").write_text("color_topic: /nope/image\n")
    args = ["map", str(tmp_path / "bag"), "--out", str(tmp_path / "m.ply"), "--topics", str(tmp_path / "t.yaml")]
    assert main(args) == 2
    assert "topics ['/nope/image'] not in the bag" in capsys.readouterr().err


def test_bag_replay_from_a_pose_topic(synth_dir, tmp_path):
    ds = open_dataset(synth_dir)
    settings = StreamSettings(pose_topic="/camera/pose")
    bag = export_bag(ds, tmp_path / "bag", indices=[0, 1, 2], settings=settings)
    replay = BagReplay(bag, settings)
    frames = list(replay.frames())
    assert len(frames) == 3
    for frame, i in zip(frames, [0, 1, 2]):
        np.testing.assert_allclose(frame.world_from_camera, ds[i].world_from_camera, atol=1e-6)
    with pytest.raises(ValueError, match="no pose source"):
        list(BagReplay(bag, StreamSettings(pose_topic="/odom")).frames())
