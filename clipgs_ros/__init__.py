"""
ROS 2 glue for clipgs: the mapping node and its wiring.

Only modules in this package import rclpy; the algorithms live in the ROS-free ``clipgs`` package.
"""
