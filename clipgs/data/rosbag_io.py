"""ROS bags without ROS (rosbags): write a dataset as a bag, and replay a bag as Frames.

Replay goes through the same pieces as the node (pairing, tf lookup, FrameAssembler). Poses come from
/tf + /tf_static (the camera frame looked up in ``map_frame`` at the image stamp) or from a pose topic.
ROS 1 bags (e.g. TUM RGB-D) are read too.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from clipgs.data.dataset import SequenceDataset
from clipgs.data.frame import Frame, FrameError
from clipgs.data.ros_messages import (
    MessageError,
    image_from_array,
    matrix_from_pose,
    matrix_from_transform,
    stamp_to_seconds,
)
from clipgs.data.ros_stream import ApproxTimePairer, FrameAssembler, StreamSettings, TransformBuffer, body_from_optical
from clipgs.geometry import invert_rigid, rotmat_to_quat

log = logging.getLogger(__name__)
BAG_SUFFIXES = (".mcap", ".db3", ".bag")


def is_bag(path: str | Path) -> bool:
    """A ROS 2 bag folder (metadata.yaml), a bag file (.mcap, .db3) or a ROS 1 .bag file."""
    path = Path(path)
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (path.is_file() and path.suffix in BAG_SUFFIXES)


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def offered_qos(kind: str):
    """The QoS a live publisher of this stream offers, recorded in the bag so ``ros2 bag play`` republishes with
    it: /tf_static transient-local (tf2's static listener receives nothing else), /tf reliable with a deep
    queue, camera topics reliable and volatile as camera drivers offer them."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    durability = QosDurability.TRANSIENT_LOCAL if kind == "tf_static" else QosDurability.VOLATILE
    depth = {"tf_static": 1, "tf": 100, "pose": 50}.get(kind, 10)
    never = QosTime(sec=0, nsec=0)  # rosbag2's "default": no deadline, lifespan or lease
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE, durability, never, never,
               QosLiveliness.AUTOMATIC, never, False)


def export_bag(dataset: SequenceDataset, out: str | Path, indices: list[int] | None = None,
               settings: StreamSettings | None = None, fps: float = 5.0, body_frame: str = "camera_link",
               optical_frame: str = "camera_color_optical_frame") -> Path:
    """Write frames as an MCAP ROS 2 bag: colour (rgb8), aligned depth (16UC1 mm), camera_info, /tf, /tf_static
    and, if ``settings.pose_topic`` is set, the optical-frame poses as geometry_msgs/PoseStamped too.

    tf: ``map_frame`` -> ``body_frame`` per frame (dynamic) and ``body_frame`` -> ``optical_frame`` (static,
    REP 103 optical rotation), so replay exercises a real chain lookup. Stamps are ``i / fps`` seconds.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    settings = settings or StreamSettings()
    ts = _typestore()
    T = ts.types
    indices = list(range(len(dataset))) if indices is None else indices
    out = Path(out)

    def header(t: float, frame_id: str):
        sec = int(np.floor(t))
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=round((t - sec) * 1e9)),
                                        frame_id=frame_id)

    def tf(parent: str, child: str, t: float, M: np.ndarray):
        w, x, y, z = rotmat_to_quat(M[:3, :3])
        return T["geometry_msgs/msg/TransformStamped"](
            header=header(t, parent), child_frame_id=child,
            transform=T["geometry_msgs/msg/Transform"](
                translation=T["geometry_msgs/msg/Vector3"](x=M[0, 3], y=M[1, 3], z=M[2, 3]),
                rotation=T["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)))

    def write(writer, conn, t: float, msg, msgtype: str) -> None:
        writer.write(conn, round(t * 1e9), ts.serialize_cdr(msg, msgtype))

    with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        types = {"color": "sensor_msgs/msg/Image", "depth": "sensor_msgs/msg/Image",
                 "info": "sensor_msgs/msg/CameraInfo", "tf": "tf2_msgs/msg/TFMessage",
                 "tf_static": "tf2_msgs/msg/TFMessage"}
        topics = {"color": settings.color_topic, "depth": settings.depth_topic, "info": settings.camera_info_topic,
                  "tf": "/tf", "tf_static": "/tf_static"}
        if settings.pose_topic:  # poses on a PoseStamped topic instead of /tf
            types["pose"], topics["pose"] = "geometry_msgs/msg/PoseStamped", settings.pose_topic
        conns = {k: writer.add_connection(topics[k], types[k], typestore=ts, offered_qos_profiles=[offered_qos(k)])
                 for k in types}
        static = tf(body_frame, optical_frame, 0.0, body_from_optical())
        write(writer, conns["tf_static"], 0.0, T["tf2_msgs/msg/TFMessage"](transforms=[static]), types["tf_static"])
        optical_from_body = invert_rigid(body_from_optical())
        for k, i in enumerate(indices):
            f = dataset[i]
            t = (k + 1) / fps
            world_from_body = f.world_from_camera @ optical_from_body
            write(writer, conns["tf"], t, T["tf2_msgs/msg/TFMessage"](
                transforms=[tf(settings.map_frame, body_frame, t, world_from_body)]), types["tf"])
            if settings.pose_topic:
                M = f.world_from_camera
                w, x, y, z = rotmat_to_quat(M[:3, :3])
                pose = T["geometry_msgs/msg/Pose"](
                    position=T["geometry_msgs/msg/Point"](x=M[0, 3], y=M[1, 3], z=M[2, 3]),
                    orientation=T["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w))
                write(writer, conns["pose"], t, T["geometry_msgs/msg/PoseStamped"](
                    header=header(t, settings.map_frame), pose=pose), types["pose"])
            P = np.zeros((3, 4))
            P[:, :3] = f.K
            info = T["sensor_msgs/msg/CameraInfo"](
                header=header(t, optical_frame), height=f.height, width=f.width, distortion_model="plumb_bob",
                d=np.zeros(5), k=f.K.reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
                roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
            write(writer, conns["info"], t, info, types["info"])
            color = image_from_array(f.rgb, "rgb8", header(t, optical_frame), T["sensor_msgs/msg/Image"])
            mm = np.clip(np.round(f.depth * settings.depth_scale), 0, 65535).astype(np.uint16)
            depth = image_from_array(mm, "16UC1", header(t, optical_frame), T["sensor_msgs/msg/Image"])
            write(writer, conns["color"], t, color, types["color"])
            write(writer, conns["depth"], t + 0.002, depth, types["depth"])  # a realistic small offset
    return out


class BagReplay:
    """Frames from a bag, in stream order. Problems are counted in ``errors`` (reason -> count), never raised."""

    def __init__(self, path: str | Path, settings: StreamSettings | None = None) -> None:
        self.path = Path(path)
        if not is_bag(self.path):
            raise FileNotFoundError(f"not a ROS bag: {self.path} (expected a bag folder, .mcap, .db3 or .bag)")
        self.settings = settings or StreamSettings()
        self.errors: Counter = Counter()
        self.pairs = 0

    def _open(self):
        from rosbags.highlevel import AnyReader

        return AnyReader([self.path], default_typestore=_typestore())

    def _poses(self, reader) -> TransformBuffer:
        """First pass: all transforms (or the pose topic) into a buffer with full history."""
        s = self.settings
        buf = TransformBuffer(tolerance=s.tf_tolerance_s, max_age=None)
        wanted = {"/tf", "/tf_static"} if not s.pose_topic else {s.pose_topic}
        conns = [c for c in reader.connections if c.topic in wanted]
        if not conns:
            raise ValueError(f"{self.path}: no pose source; expected topics {sorted(wanted)} "
                             f"(bag has {sorted({c.topic for c in reader.connections})})")
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            try:
                if s.pose_topic:
                    pose = msg.pose.pose if hasattr(msg.pose, "pose") else msg.pose  # Odometry or PoseStamped
                    buf.add(s.map_frame, "__pose_topic__", stamp_to_seconds(msg.header.stamp), matrix_from_pose(pose))
                else:
                    for t in msg.transforms:
                        buf.add(t.header.frame_id, t.child_frame_id, stamp_to_seconds(t.header.stamp),
                                matrix_from_transform(t.transform), static=conn.topic == "/tf_static")
            except (MessageError, ValueError) as exc:
                self.errors[f"bad_pose: {exc}"[:80]] += 1
        return buf

    def frames(self) -> Iterator[Frame]:
        s = self.settings
        with self._open() as reader:
            poses = self._poses(reader)
            topics = {s.color_topic: "color", s.depth_topic: "depth", s.camera_info_topic: "info"}
            conns = [c for c in reader.connections if c.topic in topics]
            missing = sorted(set(topics) - {c.topic for c in conns})
            if missing:
                raise ValueError(f"{self.path}: topics {missing} not in the bag "
                                 f"(has {sorted({c.topic for c in reader.connections})}); set them with --topics")
            pairer, assembler = ApproxTimePairer(s.sync_slop_s), FrameAssembler(s.depth_scale)
            for conn, _, raw in reader.messages(connections=conns):
                kind = topics[conn.topic]
                msg = reader.deserialize(raw, conn.msgtype)
                if kind == "info":
                    try:
                        assembler.set_camera_info(msg)
                    except MessageError as exc:
                        self.errors[f"camera_info: {exc}"[:80]] += 1
                    continue
                pair = pairer.push(kind, stamp_to_seconds(msg.header.stamp), msg)
                if pair is None:
                    continue
                stamp, color, depth = pair
                self.pairs += 1
                try:
                    source = "__pose_topic__" if s.pose_topic else (s.camera_frame or color.header.frame_id)
                    pose = poses.lookup(s.map_frame, source, stamp)
                    yield assembler.assemble(color, depth, pose)
                except LookupError as exc:
                    self.errors["no_pose"] += 1
                    log.debug("no pose at %.3f: %s", stamp, exc)
                except (MessageError, FrameError) as exc:
                    self.errors[str(exc)[:80]] += 1
            self.errors["unpaired"] += pairer.dropped
