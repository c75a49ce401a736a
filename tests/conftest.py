"""Shared fixtures: seeded random Gaussian scenes in front of a camera."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipgs.data.frame import Camera
from clipgs.geometry import intrinsics_from_hfov, look_at

torch.set_num_threads(2)


def random_scene(n: int, seed: int, dtype=torch.float64, channels: int = 3, spread: float = 1.0,
                 scale_range=(-3.0, -1.0)):
    """N random Gaussians around the world origin (a camera from ``make_camera`` looks at it)."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * 2 * spread
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    lo, hi = scale_range
    log_scales = lo + (hi - lo) * torch.rand(n, 3, generator=g, dtype=dtype)
    opacity_logits = torch.randn(n, generator=g, dtype=dtype) * 2.0
    features = torch.rand(n, channels, generator=g, dtype=dtype)
    return means, quats, log_scales, opacity_logits, features


def make_camera(width: int, height: int, eye=(0.3, -3.0, 0.8), hfov: float = 70.0) -> Camera:
    return Camera(intrinsics_from_hfov(width, height, hfov), width, height, look_at(np.array(eye), np.zeros(3)))


@pytest.fixture
def scene_factory():
    return random_scene


@pytest.fixture
def camera_factory():
    return make_camera


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic room (24 frames, 80x60) shared by the data tests."""
    from clipgs.data.synthetic import generate_scene

    return generate_scene(tmp_path_factory.mktemp("synth") / "room", n_frames=24, width=80, height=60,
                          progress=False)
