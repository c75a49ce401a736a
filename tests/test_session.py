"""MappingSession: the ROS node's logic, driven with real ROS 2 message classes (rosbags), no rclpy."""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import numpy as np
import torch

from clipgs.data.dataset import open_dataset
from clipgs.data.images import colorize_labels
from clipgs.data.ros_messages import image_from_array
from clipgs.geometry import unproject_depth
from clipgs.mapping import load_ply
from clipgs.mapping.config import MapperConfig
from clipgs.parameters import NodeSettings, Parameters
from clipgs.semantics.config import SemanticTrainingConfig
from clipgs.semantics.factory import SemanticSettings
from clipgs.semantics.sources import TeacherCorruption
from clipgs.session import MappingSession
from tests.ros_helpers import Image, camera_info, header

ROOT = Path(__file__).resolve().parents[1]


def messages(frame, t):
    color = image_from_array(frame.rgb, "rgb8", header(t), Image)
    mm = np.round(frame.depth * 1000).astype(np.uint16)
    return color, image_from_array(mm, "16UC1", header(t), Image), camera_info(frame.K, frame.width, frame.height, t)


def make_session(tmp_path, **node):
    params = Parameters(mapper=MapperConfig(iters_per_keyframe=2, w_ssim=0.0),
                        node=NodeSettings(autosave_path=str(tmp_path / "auto.ply"), **node),
                        semantics=SemanticSettings(semantic_source="none"))
    return MappingSession(params)



def feed(session, ds, count: int) -> None:
    """The dataset's first ``count`` frames as ROS messages (frame k stamped 1 + k s), each mapped before the next."""
    for k in range(count):
        c, d, info = messages(ds[k], 1.0 + k)
        session.on_camera_info(info)
        session.on_images(c, d, ds[k].world_from_camera)
        session.worker.wait_idle(120)

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
    views = session.render()
    rgb, depth_img = views.rgb, views.depth
    assert views.semantic is None  # geometry-only session
    assert rgb.shape == (60, 80, 3) and rgb.dtype == np.uint8 and np.std(rgb) > 10
    # Rendered from the latest camera (frame 3): far closer to its depth than to another view's.
    err_latest, err_other = (np.median(np.abs(depth_img - ds[k].depth)) for k in (3, 0))
    assert err_latest < 0.1 and err_latest < 0.5 * err_other
    points, colours = session.cloud()
    assert points.shape == (500, 3) and colours.dtype == np.uint8
    line = session.stats_line()
    assert "pairs 6" in line and "mapped 4" in line and "no pose 1" in line and "bad messages 1" in line
    assert re.search(r"keyframes \d+ \(held \d+, \d+ MB\)", line)
    # Where the time goes: the prepare thread per frame, the map thread per keyframe.
    w = session.worker
    assert w.prepared == 4 and 0 < w.ms_per_frame_prepared < 1e3 * w.seconds_per_keyframe
    assert re.search(r", \d+ ms a frame prepared, \d+\.\d\d s a keyframe \(steps \d+ ms, .*growth \d+ ms", line)
    assert "3DCS" not in line  # geometry only; a semantic trainer's rounds, and those that waited, are listed:
    session.worker.mapper.trainer.counters = lambda: {"pseudo_label_rounds": 2, "dcs_rounds_waited": 5}
    assert "3DCS rounds 2 (due while frames waited 5)" in session.stats_line()
    ok, msg = session.save_map(str(tmp_path / "m.ply"))
    assert ok and len(load_ply(tmp_path / "m.ply")) > 0 and "saved" in msg
    from clipgs.mapping.trajectory import load_trajectory

    poses = load_trajectory(tmp_path / "m.keyframes.txt")  # the keyframe trajectory beside the map
    assert f"its {len(poses)} keyframe poses" in msg and len(poses) == session.worker.mapper.stats.keyframes > 0
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
    assert not result.success and "semantics off" in result.message
    session.shutdown(autosave=False)


def test_missing_clip_weights_leave_semantics_off_with_the_reason(tmp_path):
    session = MappingSession(Parameters())  # default source clip_fast with ViT-B-16, no checkpoint given
    assert session.semantics.source is None and "set clip_weights" in session.semantics_status
    assert session.worker.mapper.map.gaussians.sem_dim == 0  # geometry only
    session.shutdown(autosave=False)


def test_semantic_session_renders_labels_answers_queries_and_saves_the_model(synth_dir, tmp_path):
    from clipgs.semantics.factory import SemanticStack
    from clipgs.semantics.model import load_semantics
    from clipgs.semantics.pipeline import simulated_setup

    ds = open_dataset(synth_dir)
    teacher, text, vocab = simulated_setup(ds, corruption=TeacherCorruption(0.0, 0.0, 0.0))
    # ROS frames carry no ground truth: the teacher looks up the dataset frame by stamp (frame k at 1 + k s).
    stack = SemanticStack(lambda f: teacher(ds[round(f.timestamp - 1.0)]), text, ds.classes, vocab, "simulated")
    params = Parameters(mapper=MapperConfig(iters_per_keyframe=25, w_ssim=0.0, kf_translation_m=0.0),
                        training=SemanticTrainingConfig(dcs_every=0), node=NodeSettings(idle_refit_s=1.0))
    session = MappingSession(params, stack)
    assert session.semantics_status.startswith("semantics on: simulated, d=16")
    assert "no keyframe" in session.query("chair").message or "empty" in session.query("chair").message
    feed(session, ds, 6)
    views = session.render()
    assert views.semantic.shape == (60, 80, 3) and views.semantic.dtype == np.uint8
    frame = ds[5]
    palette = {tuple(colorize_labels(np.array([[i]]))[0, 0]): i for i in range(len(ds.classes))}
    labels = np.array([[palette[tuple(px)] for px in row] for row in views.semantic])
    assert views.labels.dtype == np.uint16 and np.array_equal(views.labels, labels)  # ~/semantic_labels
    assert (labels == frame.labels).mean() > 0.6  # the latest view's classes, decoded from the map
    chair = ds.classes.index("chair")
    assert (frame.labels == chair).sum() > 30
    result = session.query("chair")
    assert result.success, result.message
    assert result.mask.dtype == np.uint8 and set(np.unique(result.mask)) <= {0, 255}
    inside = (result.mask > 0)[frame.labels == chair].mean()
    assert inside > 0.5 and 0 < result.score <= 1
    seen = [unproject_depth(np.where(ds[k].labels == chair, ds[k].depth, 0), ds[k].K, ds[k].world_from_camera)[0]
            for k in range(6)]
    seen = np.concatenate(seen)  # every chair point the mapped frames saw, world frame
    assert np.all(seen.min(0) - 0.3 < result.centroid) and np.all(result.centroid < seen.max(0) + 0.3)
    assert np.all(result.box_min <= result.centroid) and np.all(result.centroid <= result.box_max)
    assert not session.query("\t").success
    ok, msg = session.save_map(str(tmp_path / "sem.ply"))
    assert ok and "semantic model" in msg
    model = load_semantics(tmp_path / "sem.ply")
    assert model.vocabulary == ds.classes and model.decoder.sem_dim == 16
    deadline = time.monotonic() + 60  # no keyframe for idle_refit_s: the decoder is refitted while quiet
    while session.worker.idle_refits == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "decoder refits while quiet 1" in session.stats_line()
    session.settings.autosave_path = str(tmp_path / "auto.ply")
    outcome = session.shutdown()  # the autosave: the decoder is refitted first
    assert "saved" in outcome and re.search(r"decoder refit first: 300 steps over 6 keyframes", outcome), outcome
    saved = load_semantics(tmp_path / "auto.ply").decoder
    assert not torch.equal(saved.net[0].weight, model.decoder.net[0].weight)



def test_shutdown_finishes_the_map_within_its_budget_and_always_saves(synth_dir, tmp_path):
    from clipgs.semantics.factory import SemanticStack
    from clipgs.semantics.pipeline import simulated_setup

    ds = open_dataset(synth_dir)
    teacher, text, vocab = simulated_setup(ds, corruption=TeacherCorruption(0.0, 0.0, 0.0))
    done = {}
    for budget in (0.0, 60.0):
        stack = SemanticStack(lambda f: teacher(ds[round(f.timestamp - 1.0)]), text, ds.classes, vocab, "simulated")
        node = NodeSettings(idle_refit_s=0.0, finish_budget_s=budget, autosave_path=str(tmp_path / f"{budget}.ply"))
        params = Parameters(mapper=MapperConfig(iters_per_keyframe=3, w_ssim=0.0, kf_translation_m=0.0), node=node,
                            training=SemanticTrainingConfig(dcs_final_keyframes=2, refit_steps=10))
        session = MappingSession(params, stack)
        feed(session, ds, 3)
        outcome = session.shutdown()
        trainer = session.worker.mapper.trainer
        assert "saved" in outcome and (tmp_path / f"{budget}.ply").exists(), outcome
        done[budget] = trainer.pseudo_label_rounds, trainer.refit.steps
    assert done == {0.0: (0, 0), 60.0: (1, 10)}  # no time: the map is saved as it stands

def make_stream_session(tmp_path, **stream):
    from clipgs.data.ros_stream import StreamSettings

    params = Parameters(mapper=MapperConfig(iters_per_keyframe=2, w_ssim=0.0, kf_translation_m=0.0),
                        node=NodeSettings(autosave_path=""), stream=StreamSettings(**stream),
                        semantics=SemanticSettings(semantic_source="none"))
    return MappingSession(params)


def test_late_poses_on_a_pose_topic_are_waited_for(synth_dir, tmp_path):
    """Odometry 50 ms behind the images (typical): every pair waits for the pose at its stamp, none is lost."""
    ds = open_dataset(synth_dir)
    session = make_stream_session(tmp_path, pose_topic="/odom", pose_wait_s=5.0)
    session.on_camera_info(messages(ds[0], 0.0)[2])
    frames = [ds[i] for i in ds.train_indices[:5]]
    for k, frame in enumerate(frames):
        t = 1.0 + 0.2 * k
        color, depth, _ = messages(frame, t)
        session.on_color(color)
        session.on_depth(depth)
        assert session.counters.submitted == k  # this pair waits: no pose at its stamp yet
        session.on_pose(t, frame.world_from_camera)  # the pose for it arrives after the images
        assert session.counters.submitted == k + 1
    assert session.counters.submitted == 5 and session.counters.no_pose == 0
    assert session.counters.waited_for_pose == 5
    session.shutdown(autosave=False)


def test_pairs_whose_pose_never_comes_are_given_up_after_pose_wait_s(synth_dir, tmp_path):
    ds = open_dataset(synth_dir)
    session = make_stream_session(tmp_path, pose_wait_s=0.2)  # poses from tf; none arrives
    color, depth, info = messages(ds[0], 1.0)
    session.on_camera_info(info)
    session.on_color(color)
    session.on_depth(depth)
    assert session.counters.no_pose == 0 and len(session.waiting.pairs) == 1  # waiting, nothing blocks
    session.resolve_waiting(now=session.waiting.pairs[0].arrived + 0.3)
    assert session.counters.no_pose == 1 and session.waiting.lost["pose_wait_expired"] == 1
    assert "pose_wait_expired 1" in session.stats_line()
    session.shutdown(autosave=False)


def test_tf_from_transform_messages_maps_a_pair_through_the_frame_chain(synth_dir, tmp_path):
    from clipgs.geometry import rotmat_to_quat
    from tests.ros_helpers import Quaternion, TFMessage, Transform, TransformStamped, Vector3

    def tf(parent, child, t, M):
        w, x, y, z = rotmat_to_quat(M[:3, :3])
        return TransformStamped(header=header(t, parent), child_frame_id=child, transform=Transform(
            translation=Vector3(x=M[0, 3], y=M[1, 3], z=M[2, 3]), rotation=Quaternion(x=x, y=y, z=z, w=w)))

    ds = open_dataset(synth_dir)
    session = make_stream_session(tmp_path, pose_wait_s=5.0)
    frame = ds[0]
    color, depth, info = messages(frame, 1.0)
    session.on_camera_info(info)
    session.on_color(color)
    session.on_depth(depth)
    session.on_transforms(TFMessage(transforms=[tf("base", "camera_color_optical_frame", 0.0, np.eye(4))]).transforms,
                          static=True)
    assert session.counters.submitted == 0  # map -> base not known yet: wait
    for t in (0.9, 1.1):
        session.on_transforms([tf("map", "base", t, frame.world_from_camera)])
    assert session.counters.submitted == 1 and session.counters.no_pose == 0
    session.shutdown(autosave=False)


def test_bad_camera_info_is_counted_not_raised(tmp_path):
    session = make_session(tmp_path)
    session.on_camera_info(camera_info(np.zeros((3, 3)), 10, 10))
    assert "calibrated" in next(iter(session.counters.bad_messages))
    session.shutdown(autosave=False)


def test_core_warnings_reach_a_forwarded_logger(tmp_path):
    """clipgs_ros forwards the core's logging to the node's logger: what the session warns arrives there."""
    from clipgs_ros.ros_logging import forward_core_logging, stop_forwarding

    class NodeLogger:  # what rclpy's logger offers
        def __init__(self):
            self.lines = []

        def __getattr__(self, level):
            return lambda text: self.lines.append((level, text))

    ros = NodeLogger()
    handler = forward_core_logging(ros)
    try:
        session = make_session(tmp_path)
        session.on_camera_info(camera_info(np.zeros((3, 3)), 10, 10))
        logging.getLogger("clipgs.mapping.worker").debug("below the forwarded level")
        logging.getLogger("clipgs.mapping.worker").error("mapper failed")
        session.shutdown(autosave=False)
    finally:
        stop_forwarding(handler)
    assert [level for level, _ in ros.lines] == ["warning", "error"]
    assert ros.lines[0][1].startswith("clipgs.session: ignoring input: camera_info:")
    assert ros.lines[1][1] == "clipgs.mapping.worker: mapper failed"
    assert logging.getLogger("clipgs").propagate and handler not in logging.getLogger("clipgs").handlers


def test_odometry_poses_turn_pose_refinement_on():
    from clipgs.data.ros_stream import StreamSettings

    for pose_topic, kind, on in (("/odom", "Odometry", True), ("/pose", "PoseStamped", False), ("", "Odometry", False)):
        session = MappingSession(Parameters(stream=StreamSettings(pose_topic=pose_topic, pose_topic_type=kind),
                                            semantics=SemanticSettings(semantic_source="none")))
        try:
            config = session.worker.mapper.config
            assert (config.pose_refine_iters, config.track_iters) == ((15, 6) if on else (0, 0)), (pose_topic, kind)
            assert session.worker.mapper.tracker.enabled == on
        finally:
            session.shutdown(autosave=False)
