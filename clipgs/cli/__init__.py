"""The ``clipgs`` command: offline tools that need no ROS and no GPU (``clipgs --help``)."""
from clipgs.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
