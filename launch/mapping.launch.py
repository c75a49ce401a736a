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

"""Launch the clipgs mapping node, optionally with RViz."""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare('clipgs_ros')
    use_sim_time = LaunchConfiguration('use_sim_time')
    return LaunchDescription([
        DeclareLaunchArgument(
            'params_file', default_value=PathJoinSubstitution([share, 'config', 'mapping.yaml']),
            description='ROS parameters of the mapping node (topics, frames, mapper settings)'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false',
            description='use /clock (true when playing a bag with --clock)'),
        DeclareLaunchArgument(
            'rviz', default_value='false', description='start RViz with config/clipgs.rviz'),
        Node(
            package='clipgs_ros', executable='mapping_node', name='clipgs_mapping',
            output='screen',
            parameters=[LaunchConfiguration('params_file'), {'use_sim_time': use_sim_time}]),
        Node(
            package='rviz2', executable='rviz2', name='clipgs_rviz', output='log',
            arguments=['-d', PathJoinSubstitution([share, 'config', 'clipgs.rviz'])],
            parameters=[{'use_sim_time': use_sim_time}],
            condition=IfCondition(LaunchConfiguration('rviz'))),
    ])
