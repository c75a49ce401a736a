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

"""Stop spinning on SIGINT or SIGTERM without raising inside the executor."""

import signal
import threading

import rclpy


def spin_until_signalled(executor, poll_s: float = 0.2) -> None:
    """
    Spin ``executor`` until SIGINT or SIGTERM arrives (or the context is shut down).

    The handler only sets a flag. Python's default SIGINT handler raises KeyboardInterrupt
    wherever the main thread happens to be, inside the executor and holding its locks
    included, and the node's shutdown (autosave) that follows could then wait forever.
    Afterwards the previous handlers are back: a second Ctrl-C stops a long autosave.
    """
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=poll_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
