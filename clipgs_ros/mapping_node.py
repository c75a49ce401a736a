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

"""
The clipgs mapping node: ROS 2 topics and services wired to clipgs.session.MappingSession.

Inputs go through the ROS-free stream code that bag replay uses (clipgs.data.ros_stream): a
transform buffer fed by /tf and /tf_static (or a pose topic), a colour/depth pairer, and pairs
that wait for a late pose without blocking any executor thread. No tf2_ros, no message_filters.
"""

import array

from clipgs.data.ros_messages import (
    image_from_array, matrix_from_pose, MessageError, pointcloud2_from_points, stamp_to_seconds)
from clipgs.errors import SettingsError
from clipgs.session import MappingSession
from clipgs_ros.keyframe_path import KeyframePathPublisher
from clipgs_ros.markers import box_markers, Detection3DArray, detections, instance_points, point
from clipgs_ros.node_parameters import declare_settings, live_settings
from clipgs_ros.ros_logging import forward_core_logging, stop_forwarding
from clipgs_ros.signals import spin_until_signalled
import numpy as np
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

try:  # built by colcon; not buildable with rclpy from PyPI: then topics work, services are off
    from clipgs_interfaces.srv import QueryObject, SaveMap
except ImportError:
    QueryObject = SaveMap = None
try:  # part of every ROS install, not on PyPI: there, poses come from a pose topic
    from tf2_msgs.msg import TFMessage
except ImportError:
    TFMessage = None


def _bytes(b):
    return array.array('B', b)


class MappingNode(Node):
    """Subscribes to RGB-D + camera_info + poses, maps online, publishes renders and the map."""

    def __init__(self):
        super().__init__('clipgs_mapping', automatically_declare_parameters_from_overrides=True)
        self.log_handler = forward_core_logging(self.get_logger())
        params = declare_settings(self)
        stream = params.stream
        self.stream, self.settings = stream, params.node
        self.session = MappingSession(params)
        log = self.get_logger()
        (log.warning if params.semantics.semantic_source != 'none'
         and self.session.semantics.source is None else log.info)(self.session.semantics_status)

        inputs, self.outputs = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
        services = ReentrantCallbackGroup()
        session = self.session
        for msg_type, topic, callback in (
                (CameraInfo, stream.camera_info_topic, session.on_camera_info),
                (Image, stream.color_topic, session.on_color),
                (Image, stream.depth_topic, session.on_depth)):
            self.create_subscription(msg_type, topic, callback, qos_profile_sensor_data,
                                     callback_group=inputs)
        if stream.pose_topic:
            self._subscribe_pose(stream.pose_topic, inputs)
        elif TFMessage is None:
            log.error('poses come from tf, but tf2_msgs is missing: install it or set pose_topic')
        else:
            reliable = ReliabilityPolicy.RELIABLE
            for topic, durability in (('/tf', DurabilityPolicy.VOLATILE),
                                      ('/tf_static', DurabilityPolicy.TRANSIENT_LOCAL)):
                self.create_subscription(
                    TFMessage, topic,
                    lambda m, s=topic == '/tf_static': session.on_transforms(m.transforms, s),
                    QoSProfile(depth=100, reliability=reliable, durability=durability),
                    callback_group=inputs)
        self.create_timer(0.05, self.session.resolve_waiting, callback_group=inputs)

        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.rgb_pub = self.create_publisher(Image, '~/rendered_rgb', 2)
        self.depth_pub = self.create_publisher(Image, '~/rendered_depth', 2)
        self.semantic_pub = self.create_publisher(Image, '~/semantic_image', 2)
        self.labels_pub = self.create_publisher(Image, '~/semantic_labels', 2)
        self.cloud_pub = self.create_publisher(PointCloud2, '~/map_cloud', latched)
        self.path = KeyframePathPublisher(self, '~/keyframe_path', latched)
        self.mask_pub = self.create_publisher(Image, '~/query_mask', 2)
        self.marker_pub = self.create_publisher(MarkerArray, '~/query_markers', latched)
        self.detection_pub = Detection3DArray and self.create_publisher(
            Detection3DArray, '~/query_detections', latched)
        if Detection3DArray is None:
            log.info('vision_msgs is not installed: query answers are published as markers only')
        if QueryObject is None:
            log.warning('clipgs_interfaces is not built: /query_object and ~/save_map are off '
                        '(colcon build the clipgs_interfaces package)')
        else:
            self.create_service(QueryObject, '/query_object', self.on_query,
                                callback_group=services)
            self.create_service(SaveMap, '~/save_map', self.on_save_map, callback_group=services)
        self.timers_by_name = {}
        self._start_timers()
        self.add_on_set_parameters_callback(self.on_set_parameters)
        log.info(f'mapping {stream.color_topic} + {stream.depth_topic} in {stream.map_frame}, '
                 f'poses from {stream.pose_topic or "tf"} (waiting up to {stream.pose_wait_s} s)')

    def on_set_parameters(self, changes):
        """Apply the live parameters; refuse the rest with the reason."""
        settings, reason = live_settings(self.settings, changes)
        if settings is None:
            return SetParametersResult(successful=False, reason=reason)
        self.settings = self.session.settings = settings
        self._start_timers()
        return SetParametersResult(successful=True)

    def _start_timers(self):
        for timer in self.timers_by_name.values():
            self.destroy_timer(timer)
        rates = {'render': (self.settings.render_rate_hz, self.publish_render),
                 'cloud': (self.settings.cloud_rate_hz, self.publish_cloud),
                 'stats': (1.0, self.log_stats)}
        self.timers_by_name = {
            name: self.create_timer(1.0 / hz, callback, callback_group=self.outputs)
            for name, (hz, callback) in rates.items() if hz > 0}

    def _subscribe_pose(self, topic, group):
        """Subscribe to a geometry_msgs/PoseStamped or nav_msgs/Odometry pose topic."""
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Odometry
        odometry = self.stream.pose_topic_type == 'Odometry'

        def on_pose(msg):
            pose = msg.pose.pose if odometry else msg.pose
            try:
                self.session.on_pose(stamp_to_seconds(msg.header.stamp), matrix_from_pose(pose))
            except MessageError as exc:
                self.get_logger().warning(f'bad pose on {topic}: {exc}', throttle_duration_sec=5.0)

        self.create_subscription(Odometry if odometry else PoseStamped, topic, on_pose, 50,
                                 callback_group=group)

    def publish_render(self):
        header = self.session.last_header
        views = self.session.render() if header is not None else None
        if views is None:
            return
        self.rgb_pub.publish(image_from_array(views.rgb, 'rgb8', header, Image, _bytes))
        self.depth_pub.publish(image_from_array(views.depth, '32FC1', header, Image, _bytes))
        if views.semantic is not None:
            self.semantic_pub.publish(
                image_from_array(views.semantic, 'rgb8', header, Image, _bytes))
            self.labels_pub.publish(
                image_from_array(views.labels, 'mono16', header, Image, _bytes))

    def publish_cloud(self):
        points, colors = self.session.cloud()
        if len(points) == 0:
            return
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.stream.map_frame)
        self.cloud_pub.publish(
            pointcloud2_from_points(points, colors, header, PointCloud2, PointField, _bytes))
        self.path.publish(self.session.keyframe_trajectory(), header)

    def log_stats(self):
        line = self.session.due_stats()
        if line:
            self.get_logger().info(line)

    def on_save_map(self, request, response):
        response.success, response.message = self.session.save_map(request.path)
        return response

    def answer(self, label, viewpoint=None):
        """Answer a text query; publish its mask, markers and detections (the service's work)."""
        result = self.session.query(label, viewpoint)
        if result.success:
            self._publish_answer(label, result)
        return result

    def _publish_answer(self, label, result):
        """Publish an answer's mask, markers and detections; returns the mask message."""
        header = self.session.last_header or Header(frame_id=self.stream.map_frame)
        mask = image_from_array(result.mask, 'mono8', header, Image, _bytes)
        self.mask_pub.publish(mask)
        stamp = self.get_clock().now().to_msg()
        self.marker_pub.publish(box_markers(label, result, self.stream.map_frame, stamp))
        if self.detection_pub is not None:
            self.detection_pub.publish(detections(label, result, self.stream.map_frame, stamp))
        return mask

    def on_query(self, request, response):
        viewpoint = None
        if request.use_viewpoint:
            try:
                viewpoint = matrix_from_pose(request.viewpoint)
            except MessageError as exc:
                response.success, response.message = False, f'bad viewpoint: {exc}'
                return response
        result = self.session.query(request.label, viewpoint)
        response.success, response.message, response.score = (
            result.success, result.message, float(result.score))
        if not result.success:
            return response
        response.mask = self._publish_answer(request.label, result)
        response.relevancy = image_from_array(result.relevancy.astype(np.float32), '32FC1',
                                              response.mask.header, Image, _bytes)
        response.centroid, response.box_min, response.box_max = (
            point(result.centroid), point(result.box_min), point(result.box_max))
        (response.object_centroids, response.object_box_min,
         response.object_box_max) = instance_points(result.instances)
        return response


def main(args=None):
    """Run the node; exit 2 with one line naming the parameter when a parameter is wrong."""
    # rclpy's SIGINT handler would invalidate the context before the autosave could log to /rosout.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node, code = None, 0
    try:
        node = MappingNode()
        executor = MultiThreadedExecutor()
        executor.add_node(node)
        spin_until_signalled(executor)
    except SettingsError as exc:
        rclpy.logging.get_logger('clipgs_mapping').fatal(f'cannot start: {exc}')
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            outcome = node.session.shutdown(autosave=True)  # context still valid: /rosout works
            if outcome:
                node.get_logger().info(outcome)
            stop_forwarding(node.log_handler)
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == '__main__':
    raise SystemExit(main())
