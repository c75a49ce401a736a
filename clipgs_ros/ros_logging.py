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

"""Python logging of the clipgs core, forwarded to a node's logger (console, log file, /rosout)."""

import logging

CORE_LOGGER = 'clipgs'


class RosLogHandler(logging.Handler):
    """Sends each record to the matching level of an rclpy logger (or a look-alike)."""

    def __init__(self, ros_logger):
        super().__init__(level=logging.DEBUG)
        self.ros_logger = ros_logger
        self.setFormatter(logging.Formatter('%(name)s: %(message)s'))

    def emit(self, record):
        try:
            text = self.format(record)
            if record.levelno >= logging.CRITICAL:
                self.ros_logger.fatal(text)
            elif record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            elif record.levelno >= logging.INFO:
                self.ros_logger.info(text)
            else:
                self.ros_logger.debug(text)
        except Exception:  # a logging failure must never take the node down
            self.handleError(record)


def forward_core_logging(ros_logger, level=logging.INFO):
    """Route the core's log records to ``ros_logger`` alone; returns the handler."""
    core = logging.getLogger(CORE_LOGGER)
    handler = RosLogHandler(ros_logger)
    core.addHandler(handler)
    core.setLevel(level)
    core.propagate = False
    return handler


def stop_forwarding(handler):
    """Undo ``forward_core_logging`` (at node shutdown, before the ROS logger goes away)."""
    core = logging.getLogger(CORE_LOGGER)
    core.removeHandler(handler)
    core.propagate = True
