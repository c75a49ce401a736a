"""ROS 2 glue for clipgs: the mapping node and message conversions.

Only modules in this package import rclpy; the algorithms live in the ROS-free ``clipgs`` package.
"""
