"""Real ROS 2 (Jazzy) message classes from rosbags, for tests that must not need ROS."""
from __future__ import annotations

import numpy as np
from rosbags.typesys import Stores, get_typestore

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
T = TYPESTORE.types
Time, Header = T["builtin_interfaces/msg/Time"], T["std_msgs/msg/Header"]
Image, CameraInfo = T["sensor_msgs/msg/Image"], T["sensor_msgs/msg/CameraInfo"]
PointCloud2, PointField = T["sensor_msgs/msg/PointCloud2"], T["sensor_msgs/msg/PointField"]
RegionOfInterest = T["sensor_msgs/msg/RegionOfInterest"]
Vector3, Quaternion = T["geometry_msgs/msg/Vector3"], T["geometry_msgs/msg/Quaternion"]
Point = T["geometry_msgs/msg/Point"]
Transform, TransformStamped = T["geometry_msgs/msg/Transform"], T["geometry_msgs/msg/TransformStamped"]
Pose, PoseStamped = T["geometry_msgs/msg/Pose"], T["geometry_msgs/msg/PoseStamped"]
TFMessage = T["tf2_msgs/msg/TFMessage"]


def header(seconds: float = 0.0, frame_id: str = "camera_color_optical_frame"):
    sec = int(np.floor(seconds))
    return Header(stamp=Time(sec=sec, nanosec=round((seconds - sec) * 1e9)), frame_id=frame_id)


def camera_info(K: np.ndarray, width: int, height: int, seconds: float = 0.0, d=(0.0,) * 5):
    P = np.zeros((3, 4))
    P[:, :3] = K
    return CameraInfo(header=header(seconds), height=height, width=width, distortion_model="plumb_bob",
                      d=np.asarray(d, np.float64), k=np.asarray(K, np.float64).reshape(-1), r=np.eye(3).reshape(-1),
                      p=P.reshape(-1), binning_x=0, binning_y=0,
                      roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
