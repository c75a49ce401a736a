"""The mapping node under real rclpy (the ROS 2 wheels from PyPI), DDS on loopback only, bounded in time.

A synthetic room is streamed into the node's topics with the poses 50 ms late on a PoseStamped topic; the node's
renders, semantic image and map cloud are received over DDS; a query is answered with boxes on the marker
topic; the map is saved. clipgs_interfaces cannot be built from the PyPI wheels (they ship no C headers for
rosidl's type support), so the services' work is called in-process (``node.answer``, ``session.save_map``);
under a full ROS install the same node also serves them (README, ROS 2).
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from clipgs.data.dataset import open_dataset
from clipgs.geometry import rotmat_to_quat

rclpy = pytest.importorskip("rclpy", reason="no rclpy (pip install -e '.[ros]' gives the ROS 2 wheels)")


@pytest.fixture
def ros(monkeypatch):
    """rclpy initialised on loopback, in a DDS domain of its own, shut down afterwards."""
    from rclpy.signals import SignalHandlerOptions

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    yield lambda args: rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    rclpy.try_shutdown()


def _messages(frame, t: float, pose_type: str = "PoseStamped"):
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    from clipgs.data.ros_messages import image_from_array

    sec = int(t)
    header = Header(stamp=Time(sec=sec, nanosec=round((t - sec) * 1e9)), frame_id="camera_optical")
    mm = np.round(frame.depth * 1000).astype(np.uint16)
    info = CameraInfo(header=header, width=frame.width, height=frame.height, distortion_model="plumb_bob",
                      k=frame.K.reshape(-1).tolist(), d=[0.0] * 5)
    pose = PoseStamped(header=Header(stamp=header.stamp, frame_id="map"))
    M = frame.world_from_camera
    pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in M[:3, 3])
    w, x, y, z = rotmat_to_quat(M[:3, :3])
    pose.pose.orientation.w, pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z = w, x, y, z
    if pose_type == "Odometry":
        odometry = Odometry(header=pose.header, child_frame_id="camera_optical")
        odometry.pose.pose = pose.pose
        pose = odometry
    return (image_from_array(frame.rgb, "rgb8", header, Image, bytes),
            image_from_array(mm, "16UC1", header, Image, bytes), info, pose)


@pytest.mark.parametrize("pose_type", ["PoseStamped", "Odometry"])
def test_node_maps_a_live_stream_with_late_poses_and_answers(ros, synth_dir, tmp_path, pose_type):
    """Odometry poses also turn pose tracking on: every frame is tracked on the worker's prepare thread."""
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Odometry, Path
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from visualization_msgs.msg import MarkerArray

    from clipgs_ros.mapping_node import MappingNode

    ros(["--ros-args", "-p", "pose_topic:=/odom", "-p", f"pose_topic_type:={pose_type}", "-p", "iters_per_keyframe:=2",
         "-p", "w_ssim:=0.0",
         "-p", "clip_model:=clipgs-tiny", "-p", "render_rate_hz:=4.0", "-p", "cloud_rate_hz:=2.0",
         "-p", f"autosave_path:={tmp_path / 'auto.ply'}", "-p", "kf_translation_m:=0.0", "-p", "pose_wait_s:=2.0"])
    node = MappingNode()
    stream = rclpy.create_node("clipgs_test_stream")
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pubs = {"color": stream.create_publisher(Image, "/camera/color/image_raw", qos_profile_sensor_data),
            "depth": stream.create_publisher(Image, "/camera/aligned_depth_to_color/image_raw",
                                             qos_profile_sensor_data),
            "info": stream.create_publisher(CameraInfo, "/camera/color/camera_info", qos_profile_sensor_data),
            "pose": stream.create_publisher(Odometry if pose_type == "Odometry" else PoseStamped, "/odom", 50)}
    got: dict[str, list] = {"rgb": [], "semantic": [], "cloud": [], "markers": [], "path": []}
    for key, msg_type, topic, qos in (("rgb", Image, "/clipgs_mapping/rendered_rgb", 2),
                                      ("semantic", Image, "/clipgs_mapping/semantic_image", 2),
                                      ("cloud", PointCloud2, "/clipgs_mapping/map_cloud", latched),
                                      ("path", Path, "/clipgs_mapping/keyframe_path", latched),
                                      ("markers", MarkerArray, "/clipgs_mapping/query_markers", latched)):
        stream.create_subscription(msg_type, topic, lambda m, k=key: got[k].append(m), qos)
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    executor.add_node(stream)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 60  # generous: CI machines are shared
        while not stream.count_subscribers("/camera/color/image_raw") and time.monotonic() < deadline:
            time.sleep(0.05)  # discovery on loopback
        ds = open_dataset(synth_dir)
        sent = ds.train_indices[:12]
        for k, i in enumerate(sent):
            color, depth, info, pose = _messages(ds[i], 100.0 + 0.2 * k, pose_type)
            pubs["info"].publish(info)
            pubs["color"].publish(color)
            pubs["depth"].publish(depth)
            time.sleep(0.05)  # the odometry is 50 ms behind the images
            pubs["pose"].publish(pose)
            time.sleep(0.25)
        while time.monotonic() < deadline and node.session.counters.submitted + node.session.counters.no_pose < \
                len(sent):
            time.sleep(0.1)
        c = node.session.counters
        assert c.submitted >= len(sent) - 1 and c.no_pose == 0, node.session.stats_line()
        assert c.waited_for_pose >= len(sent) - 2, node.session.stats_line()  # they did wait for the late pose
        tracked = node.session.worker.mapper.counters()[0].frames_tracked
        assert (tracked > 0) == (pose_type == "Odometry"), node.session.stats_line()
        while time.monotonic() < deadline and not (got["rgb"] and got["semantic"] and got["cloud"]):
            time.sleep(0.1)
        assert got["rgb"] and (got["rgb"][-1].width, got["rgb"][-1].height) == (ds[0].width, ds[0].height)
        assert got["semantic"] and got["semantic"][-1].encoding == "rgb8"
        assert got["cloud"] and got["cloud"][-1].width > 100 and got["cloud"][-1].header.frame_id == "map"
        def path_is_current():  # the mapper may still be mapping the last frames: the path follows
            return got["path"] and len(got["path"][-1].poses) == len(node.session.keyframe_trajectory())

        while time.monotonic() < deadline and not path_is_current():
            time.sleep(0.1)
        path, keyframes = got["path"][-1], node.session.keyframe_trajectory()  # one stamped pose per keyframe
        assert path.header.frame_id == "map" and len(path.poses) >= 2 and len(path.poses) <= len(keyframes)
        first = path.poses[0]
        assert first.header.stamp.sec == int(keyframes[0].timestamp) == 100
        assert np.allclose([first.pose.position.x, first.pose.position.y, first.pose.position.z],
                           keyframes[0].world_from_camera[:3, 3], atol=1e-6)
        t0 = time.perf_counter()
        vocabulary = [c for c in node.session.semantics.classes[1:]]
        answers = {label: node.answer(label) for label in vocabulary}  # random CLIP weights: some label matches
        latency_ms = (time.perf_counter() - t0) * 1e3 / len(vocabulary)
        found = {label: r for label, r in answers.items() if r.success}
        assert found, {label: r.message for label, r in answers.items()}
        label, result = next(iter(found.items()))
        assert result.instances and np.all(result.instances[0].box_max >= result.instances[0].box_min)
        while time.monotonic() < deadline + 10 and not got["markers"]:
            time.sleep(0.1)
        boxes = [m for m in got["markers"][-1].markers if m.ns == "clipgs_query" and m.type == 1]  # CUBE
        assert len(boxes) == min(20, len(result.instances)), label
        ok, message = node.session.save_map(str(tmp_path / "live.ply"))
        assert ok and (tmp_path / "live.ply").is_file() and (tmp_path / "live.semantics.pt").is_file(), message
        print(f"live node: {c.submitted} of {len(sent)} pairs mapped, {c.no_pose} without pose, "
              f"{c.waited_for_pose} waited for a late pose; query latency {latency_ms:.0f} ms")
    finally:
        executor.shutdown(timeout_sec=5)
        outcome = node.session.shutdown(autosave=True)
        node.destroy_node()
        stream.destroy_node()
    assert outcome and "saved" in outcome and (tmp_path / "auto.ply").is_file()


def test_a_bad_or_unknown_parameter_stops_the_node_with_its_name(ros, tmp_path):
    from clipgs.errors import SettingsError
    from clipgs_ros.mapping_node import MappingNode

    ros(["--ros-args", "-p", "max_gaussians:=lots", "-p", "autosave_path:=''"])
    with pytest.raises(SettingsError, match="max_gaussians"):
        MappingNode()
    rclpy.try_shutdown()
    ros(["--ros-args", "-p", "max_gausians:=1000", "-p", "autosave_path:=''"])
    with pytest.raises(SettingsError, match=r"unknown parameter\(s\) \['max_gausians'\]"):
        MappingNode()


def test_runtime_parameters_live_ones_apply_the_rest_are_refused(ros, tmp_path):
    from rclpy.parameter import Parameter

    from clipgs_ros.mapping_node import MappingNode

    ros(["--ros-args", "-p", "semantic_source:=none", "-p", "autosave_path:=''"])
    node = MappingNode()
    try:
        result = node.set_parameters([Parameter("max_gaussians", value=10)])[0]
        assert not result.successful and "start-up only" in result.reason
        result = node.set_parameters([Parameter("render_rate_hz", value=-1.0)])[0]
        assert not result.successful and "render_rate_hz" in result.reason
        result = node.set_parameters([Parameter("render_rate_hz", value=7.0)])[0]
        assert result.successful and node.session.settings.render_rate_hz == 7.0
        period = node.timers_by_name["render"].timer_period_ns
        assert abs(period - 1e9 / 7.0) < 1e3
    finally:
        node.session.shutdown(autosave=False)
        node.destroy_node()


def test_ctrl_c_autosaves_and_logs_it_without_rosout_errors(tmp_path):
    """The installed entry point, stopped with SIGINT as a user would: autosave, its log line, a clean exit."""
    import signal
    import subprocess
    import sys

    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(150 + os.getpid() % 50),
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "clipgs_ros.mapping_node", "--ros-args", "-p",
                             "semantic_source:=none", "-p", f"autosave_path:={tmp_path / 'auto.ply'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "mapping /camera/color/image_raw" in line or not line:
                break
        assert any("mapping /camera/color/image_raw" in line for line in lines), "".join(lines)
        time.sleep(1.0)  # spinning
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    text = "".join(lines) + out
    assert proc.returncode == 0, text
    assert "autosave skipped: the map is empty" in text or "saved" in text, text
    assert "Failed to publish log message to rosout" not in text and "Traceback" not in text, text


def test_a_wrong_parameter_exits_2_with_one_line(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(150 + os.getpid() % 50)}
    done = subprocess.run([sys.executable, "-m", "clipgs_ros.mapping_node", "--ros-args", "-p", "max_gaussians:=lots"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot start: setting max_gaussians" in done.stdout + done.stderr and "Traceback" not in done.stderr
