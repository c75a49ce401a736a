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
Launch the clipgs mapping node, optionally with RViz.

Every argument but params_file, use_sim_time and rviz overrides one node parameter when given;
left empty, the params file's value stands. Example:
ros2 launch clipgs_ros mapping.launch.py clip_model:=ViT-B-16 clip_weights:=/w/vit_b_16.bin
"""

import shutil

from clipgs.parameters import shutdown_timeout_s
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# Launch argument -> the node parameter it sets (only when given on the command line).
OVERRIDES = {
    'semantic_source': '2D semantics: clip_fast, clip_sam, precomputed or none',
    'clip_model': 'open_clip architecture, e.g. ViT-B-16 (clipgs-tiny: random test model)',
    'clip_weights': 'local open_clip checkpoint (never downloaded)',
    'sam_weights': 'local segment-anything checkpoint (clip_sam)',
    'vocabulary': 'comma-separated class names',
    'color_topic': 'sensor_msgs/Image colour topic',
    'depth_topic': 'sensor_msgs/Image depth topic aligned to colour',
    'camera_info_topic': 'sensor_msgs/CameraInfo of the colour camera',
    'map_frame': 'fixed frame of the map and of all outputs',
    'pose_topic': 'PoseStamped / Odometry topic instead of tf',
    'autosave_path': 'map written on shutdown',
}


def _nodes(context):
    share = FindPackageShare('clipgs_ros')
    use_sim_time = LaunchConfiguration('use_sim_time')
    given = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDES}
    overrides = {name: value for name, value in given.items() if value != ''}
    params_file = LaunchConfiguration('params_file').perform(context)
    # Ctrl-C: time to finish the map (finish_budget_s) and autosave it before SIGTERM.
    timeout = shutdown_timeout_s(params_file)
    actions = [Node(
        package='clipgs_ros', executable='mapping_node', name='clipgs_mapping',
        output='screen', sigterm_timeout=str(int(timeout)),
        parameters=[params_file, {'use_sim_time': use_sim_time},
                    overrides])]
    if LaunchConfiguration('rviz').perform(context).lower() in ('true', '1', 'yes'):
        if shutil.which('rviz2') is None:
            actions.append(LogInfo(msg='rviz:=true, but rviz2 is not installed (sudo apt install '
                                       'ros-$ROS_DISTRO-rviz2); mapping without it'))
        else:
            actions.append(Node(
                package='rviz2', executable='rviz2', name='clipgs_rviz', output='log',
                arguments=['-d', PathJoinSubstitution([share, 'config', 'clipgs.rviz'])],
                parameters=[{'use_sim_time': use_sim_time}]))
    return actions


def generate_launch_description():
    share = FindPackageShare('clipgs_ros')
    return LaunchDescription([
        DeclareLaunchArgument(
            'params_file', default_value=PathJoinSubstitution([share, 'config', 'mapping.yaml']),
            description='ROS parameters of the mapping node (topics, frames, mapper settings)'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false',
            description='use /clock (true when playing a bag with --clock)'),
        DeclareLaunchArgument(
            'rviz', default_value='false', description='start RViz with config/clipgs.rviz'),
        *[DeclareLaunchArgument(name, default_value='', description=f'{text} (empty: params file)')
          for name, text in OVERRIDES.items()],
        OpaqueFunction(function=_nodes),
    ])
