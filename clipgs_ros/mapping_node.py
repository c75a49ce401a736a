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

"""The clipgs mapping node: ROS 2 topics and services wired to clipgs.session.MappingSession."""

import array

from clipgs.data.ros_messages import (
    image_from_array, matrix_from_pose, matrix_from_transform, MessageError,
    pointcloud2_from_points, stamp_to_seconds)
from clipgs.parameters import Parameters, parameter_specs
from clipgs.session import MappingSession
from clipgs_ros.ros_logging import forward_core_logging, stop_forwarding
from clipgs_interfaces.srv import QueryObject, SaveMap
from geometry_msgs.msg import Point
import message_filters
import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header
from tf2_ros import Buffer, TransformException, TransformListener
from visualization_msgs.msg import Marker, MarkerArray


def _bytes(b):
    return array.array('B', b)


def _point(xyz):
    return Point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


class MappingNode(Node):
    """Subscribes to RGB-D + camera_info + poses, maps online, publishes renders and the map."""

    def __init__(self):
        super().__init__('clipgs_mapping')
        self.log_handler = forward_core_logging(self.get_logger())
        for spec in parameter_specs():
            self.declare_parameter(spec.name, spec.default, ParameterDescriptor(
                description=spec.help, additional_constraints=spec.constraints,
                dynamic_typing=True))
        params = Parameters.from_flat(
            {spec.name: self.get_parameter(spec.name).value for spec in parameter_specs()})
        stream = params.stream
        self.stream, self.settings = stream, params.node
        self.session = MappingSession(params)
        if params.semantics.semantic_source != 'none' and self.session.semantics.source is None:
            self.get_logger().warning(self.session.semantics_status)
        else:
            self.get_logger().info(self.session.semantics_status)

        inputs = MutuallyExclusiveCallbackGroup()
        outputs = MutuallyExclusiveCallbackGroup()
        services = ReentrantCallbackGroup()
        self.tf_buffer = Buffer()
        self.tf_listener = TransformListener(self.tf_buffer, self)

        self.create_subscription(CameraInfo, stream.camera_info_topic,
                                 self.session.on_camera_info, qos_profile_sensor_data,
                                 callback_group=inputs)
        color = message_filters.Subscriber(self, Image, stream.color_topic,
                                           qos_profile=qos_profile_sensor_data,
                                           callback_group=inputs)
        depth = message_filters.Subscriber(self, Image, stream.depth_topic,
                                           qos_profile=qos_profile_sensor_data,
                                           callback_group=inputs)
        self.sync = message_filters.ApproximateTimeSynchronizer(
            [color, depth], queue_size=10, slop=stream.sync_slop_s)
        self.sync.registerCallback(self.on_images)
        if stream.pose_topic:
            self._subscribe_pose(stream.pose_topic, inputs)

        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.rgb_pub = self.create_publisher(Image, '~/rendered_rgb', 2)
        self.depth_pub = self.create_publisher(Image, '~/rendered_depth', 2)
        self.semantic_pub = self.create_publisher(Image, '~/semantic_image', 2)
        self.labels_pub = self.create_publisher(Image, '~/semantic_labels', 2)
        self.cloud_pub = self.create_publisher(PointCloud2, '~/map_cloud', latched)
        self.mask_pub = self.create_publisher(Image, '~/query_mask', 2)
        self.marker_pub = self.create_publisher(MarkerArray, '~/query_markers', latched)
        self.create_service(QueryObject, '/query_object', self.on_query,
                            callback_group=services)
        self.create_service(SaveMap, '~/save_map', self.on_save_map,
                            callback_group=services)
        if self.settings.render_rate_hz > 0:
            self.create_timer(1.0 / self.settings.render_rate_hz, self.publish_render,
                              callback_group=outputs)
        if self.settings.cloud_rate_hz > 0:
            self.create_timer(1.0 / self.settings.cloud_rate_hz, self.publish_cloud,
                              callback_group=outputs)
        self.create_timer(1.0, self.log_stats, callback_group=outputs)
        self.last_header = None
        self.get_logger().info(
            f'mapping {stream.color_topic} + {stream.depth_topic} in frame {stream.map_frame}, '
            f'poses from {stream.pose_topic or "tf"}')

    def _subscribe_pose(self, topic, group):
        """Subscribe to a geometry_msgs/PoseStamped or nav_msgs/Odometry pose topic."""
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Odometry

        msg_type = Odometry if self.stream.pose_topic_type == 'Odometry' else PoseStamped

        def on_pose(msg):
            pose = msg.pose.pose if msg_type is Odometry else msg.pose
            try:
                self.session.on_pose(stamp_to_seconds(msg.header.stamp), matrix_from_pose(pose))
            except MessageError as exc:
                self.get_logger().warning(f'bad pose on {topic}: {exc}', throttle_duration_sec=5.0)

        self.create_subscription(msg_type, topic, on_pose, 50, callback_group=group)

    def lookup_pose(self, color_msg):
        """Map-from-camera pose at the image stamp, or None (logged at a low rate)."""
        stamp = color_msg.header.stamp
        if self.stream.pose_topic:
            return self.session.pose_from_topic(stamp_to_seconds(stamp))
        frame = self.stream.camera_frame or color_msg.header.frame_id
        try:
            t = self.tf_buffer.lookup_transform(self.stream.map_frame, frame,
                                                Time.from_msg(stamp),
                                                timeout=Duration(seconds=0.05))
        except TransformException as exc:
            self.get_logger().warning(f'no pose for {frame}: {exc}', throttle_duration_sec=5.0)
            return None
        return matrix_from_transform(t.transform)

    def on_images(self, color_msg, depth_msg):
        outcome = self.session.on_images(color_msg, depth_msg, self.lookup_pose(color_msg))
        if outcome == 'submitted':
            self.last_header = color_msg.header

    def publish_render(self):
        if self.last_header is None:
            return
        views = self.session.render()
        if views is None:
            return
        header = self.last_header
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

    def log_stats(self):
        line = self.session.due_stats()
        if line:
            self.get_logger().info(line)

    def on_save_map(self, request, response):
        response.success, response.message = self.session.save_map(request.path)
        return response

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
        header = self.last_header or Header(frame_id=self.stream.map_frame)
        response.mask = image_from_array(result.mask, 'mono8', header, Image, _bytes)
        response.relevancy = image_from_array(result.relevancy.astype(np.float32), '32FC1',
                                              header, Image, _bytes)
        response.centroid, response.box_min, response.box_max = (
            _point(result.centroid), _point(result.box_min), _point(result.box_max))
        response.object_centroids = [_point(i.centroid) for i in result.instances]
        response.object_box_min = [_point(i.box_min) for i in result.instances]
        response.object_box_max = [_point(i.box_max) for i in result.instances]
        self.mask_pub.publish(response.mask)
        self.marker_pub.publish(self._box_marker(request.label, result))
        return response

    def _box_marker(self, label, result):
        """One translucent box and a text label per matching object; older markers are cleared."""
        stamp = self.get_clock().now().to_msg()
        clear = Marker(action=Marker.DELETEALL)
        clear.header = Header(stamp=stamp, frame_id=self.stream.map_frame)
        markers = [clear]
        for k, inst in enumerate(result.instances[:20]):
            header = Header(stamp=stamp, frame_id=self.stream.map_frame)
            centre = (inst.box_min + inst.box_max) / 2.0
            size = np.maximum(inst.box_max - inst.box_min, 0.01)
            box = Marker(header=header, ns='clipgs_query', id=2 * k, type=Marker.CUBE,
                         action=Marker.ADD)
            box.pose.position = _point(centre)
            box.pose.orientation.w = 1.0
            box.scale.x, box.scale.y, box.scale.z = (float(v) for v in size)
            box.color.r, box.color.g = 1.0, 0.3 if k == 0 else 0.7
            box.color.b, box.color.a = 0.1, 0.4
            text = Marker(header=header, ns='clipgs_query', id=2 * k + 1,
                          type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
            text.pose.position = _point((centre[0], centre[1], inst.box_max[2] + 0.1))
            text.pose.orientation.w = 1.0
            text.scale.z = 0.15
            text.color.r = text.color.g = text.color.b = text.color.a = 1.0
            text.text = f'{label} #{k + 1}' + (f' ({result.score:.2f})' if k == 0 else '')
            markers.append(box)
            markers.append(text)
        return MarkerArray(markers=markers)


def main(args=None):
    rclpy.init(args=args)
    node = MappingNode()
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        outcome = node.session.shutdown(autosave=True)
        if outcome:
            node.get_logger().info(outcome)
        stop_forwarding(node.log_handler)
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
