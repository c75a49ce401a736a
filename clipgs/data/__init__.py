"""Posed RGB-D frames, dataset readers and synthetic scenes."""
from clipgs.data.frame import Camera, Frame, FrameError

__all__ = ["Camera", "Frame", "FrameError"]
