"""Domain errors shared by every layer: each message says what was wrong and what is expected.

All are ``ValueError`` subclasses (bad input, not a bug), so callers that only know ``ValueError`` still
catch them; ``ClipgsError`` catches any of them.
"""
from __future__ import annotations


class ClipgsError(ValueError):
    """Base of clipgs's input errors."""


class FrameError(ClipgsError):
    """A frame (or camera) whose contents cannot be used; the message says what and what was expected."""


class MessageError(ClipgsError):
    """A ROS-shaped message that cannot be converted (wrong encoding, size, non-finite values, ...)."""


class MapFileError(ClipgsError):
    """A map file that cannot be read as a Gaussian map; the message names the file and the problem."""


class SettingsError(ClipgsError):
    """A setting with a wrong name, type or value; the message names the setting and what it accepts."""
