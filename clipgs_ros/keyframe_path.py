# Copyright 2026 clipgs maintainers
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""The keyframe trajectory as a nav_msgs/Path (RViz draws it beside the map cloud)."""

from builtin_interfaces.msg import Time
from clipgs.data.ros_messages import position_and_quaternion, seconds_to_stamp
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from std_msgs.msg import Header


def keyframe_path(trajectory, header):
    """Build the path: one PoseStamped per keyframe at its frame's time, oldest first."""
    poses = []
    for keyframe in trajectory:
        sec, nanosec = seconds_to_stamp(keyframe.timestamp)
        stamp = Time(sec=sec, nanosec=nanosec)
        pose = PoseStamped(header=Header(stamp=stamp, frame_id=header.frame_id))
        position, orientation = position_and_quaternion(keyframe.world_from_camera)
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = position
        o = pose.pose.orientation
        o.x, o.y, o.z, o.w = orientation
        poses.append(pose)
    return Path(header=header, poses=poses)


class KeyframePathPublisher:
    """Publishes the path on a latched topic whenever a keyframe has joined since the last time."""

    def __init__(self, node, topic, qos):
        self.publisher = node.create_publisher(Path, topic, qos)
        self.length = 0

    def publish(self, trajectory, header):
        if len(trajectory) != self.length:
            self.length = len(trajectory)
            self.publisher.publish(keyframe_path(trajectory, header))
