"""A realistic RGB-D sensor and odometry for synthetic scenes (``clipgs synth --noise realistic``).

Depth, as a structured-light camera (RealSense D4xx-like) measures it:
- axial noise sigma(z) = 0.0012 + 0.0019 (z - 0.4)^2 metres (Nguyen et al. 2012, Kinect-style model);
- invalid pixels at depth discontinuities (a relative jump > ``edge_jump`` to a 4-neighbour) and ~2 % random
  dropouts; nothing beyond ``max_range_m`` (4 m); millimetre quantisation.
Colour: a per-frame exposure gain (log-normal, ~5 %) and mild Gaussian pixel noise (sigma 2/255).
Odometry: the poses written for mapping drift from the true ones by a random walk (~0.5 cm and ~0.2 deg per
frame, seeded); the images come from the true poses, which are written beside (``gt_traj_w_c.txt``).
Every random draw comes from one seeded generator: the same seed gives the same noise.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from clipgs.geometry import invert_rigid, quat_to_rotmat


@dataclass(frozen=True)
class SensorModel:
    """Knobs of the realistic sensor; the defaults are the documented ones above."""

    sigma_base_m: float = 0.0012
    sigma_quadratic: float = 0.0019  # per m^2 beyond 0.4 m
    dropout: float = 0.02
    edge_jump: float = 0.05  # relative depth jump that invalidates both sides of an edge
    max_range_m: float = 4.0
    exposure_sigma: float = 0.05
    rgb_sigma: float = 2.0 / 255.0
    drift_step_m: float = 0.005
    drift_step_deg: float = 0.2

    def depth_sigma(self, z: np.ndarray) -> np.ndarray:
        """(...) axial noise standard deviation in metres at depth ``z`` metres."""
        return self.sigma_base_m + self.sigma_quadratic * (np.asarray(z) - 0.4) ** 2

    def corrupt_depth(self, depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(H, W) float32 metres (0 = no return) -> the sensor's reading, mm-quantised, 0 = invalid."""
        z = depth.astype(np.float64)
        valid = z > 0
        padded = np.pad(z, 1, mode="edge")
        for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):  # up, down, left, right neighbours
            other = padded[dy:dy + z.shape[0], dx:dx + z.shape[1]]
            valid &= np.abs(other - z) <= self.edge_jump * np.maximum(z, other)
        valid &= rng.random(z.shape) >= self.dropout
        noisy = z + rng.standard_normal(z.shape) * self.depth_sigma(z)
        valid &= (noisy > 0) & (noisy <= self.max_range_m)
        return np.where(valid, np.round(noisy * 1000.0) / 1000.0, 0.0).astype(np.float32)

    def corrupt_rgb(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(H, W, 3) uint8 -> exposure gain and pixel noise applied, uint8."""
        gain = np.exp(rng.normal(0.0, self.exposure_sigma))
        out = rgb.astype(np.float64) / 255.0 * gain + rng.normal(0.0, self.rgb_sigma, rgb.shape)
        return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    def drifted(self, poses: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """Odometry poses: each step's motion is the true one composed with a small random error, so the
        error accumulates like a random walk (world_from_camera, (4, 4) each)."""
        out = [poses[0].copy()]
        for a, b in itertools.pairwise(poses):
            step = invert_rigid(a) @ b  # the true motion, in the previous camera's frame
            error = np.eye(4)
            axis = rng.standard_normal(3)
            half = np.radians(self.drift_step_deg) * abs(rng.standard_normal()) / 2
            error[:3, :3] = quat_to_rotmat(np.r_[np.cos(half), np.sin(half) * axis / np.linalg.norm(axis)])
            error[:3, 3] = rng.standard_normal(3) * self.drift_step_m / np.sqrt(3.0)
            out.append(out[-1] @ step @ error)
        return out
