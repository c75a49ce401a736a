"""What an observed surface hides: a view's sensor depth as an occluder for choosing the Gaussians a step trains.

A Gaussian well behind the surface a depth image observes, on every pixel its footprint could touch, is not
seen from that view (or only through holes the map should not have). Leaving it out of that view's steps saves
its projection, sorting and optimiser work; in a flat seen through doors more than half of a view's frustum is
behind walls.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

UNKNOWN_FAR_MM = 65535  # the far image in uint16 millimetres: this value = unknown (+inf)


@dataclass(frozen=True)
class Occluder:
    """far: (H, W) metres, the farthest observed depth within ``radius_px`` pixels of each pixel, +inf where
    unknown (no valid depth there, e.g. beyond the sensor's range). margin_m: how far behind ``far`` (at the image
    pixel nearest its centre) a Gaussian's nearest point (centre depth - 3 x its largest scale) must lie to count
    as hidden; only Gaussians whose whole footprint fits within ``radius_px`` of that pixel are tested (the others
    are kept)."""

    far: Tensor
    radius_px: int
    margin_m: float

    @classmethod
    def from_depth(cls, depth: Tensor, radius_px: int, margin_m: float) -> Occluder:
        """depth: (H, W) float metres, 0 = invalid. Single-pixel dropouts (an invalid pixel with at least 6 valid
        of its 8 neighbours) take their neighbours' farthest depth; larger invalid regions stay unknown."""
        if depth.dim() != 2:
            raise ValueError(f"depth must have shape (H, W), got {tuple(depth.shape)}")
        if radius_px < 1:
            raise ValueError(f"radius_px must be >= 1, got {radius_px}")
        d = depth.float()[None, None]
        valid = (d > 0).float()
        neighbours = F.avg_pool2d(valid, 3, 1, 1) * 9 - valid  # valid ones of the 8 (outside the image: invalid)
        d = torch.where((d <= 0) & (neighbours >= 6), F.max_pool2d(d, 3, 1, 1), d)
        d = torch.where(d > 0, d, torch.full_like(d, float("inf")))
        k = 2 * radius_px + 1  # separable: a (1, k) then a (k, 1) max
        far = F.max_pool2d(F.max_pool2d(d, (1, k), 1, (0, radius_px)), (k, 1), 1, (radius_px, 0))
        return cls(far[0, 0], int(radius_px), float(margin_m))

    def far_mm(self) -> Tensor:
        """(H, W) uint16 millimetres of ``far``, rounded up (never nearer), ``UNKNOWN_FAR_MM`` where unknown: 2 bytes
        a pixel to keep beside a view (``from_far_mm`` decodes it)."""
        far = self.far
        return torch.where(far.isfinite(), (far * 1000.0).ceil().clamp(max=UNKNOWN_FAR_MM - 1),
                           UNKNOWN_FAR_MM).to(torch.int32).to(torch.uint16)

    @classmethod
    def from_far_mm(cls, far_mm: Tensor, radius_px: int, margin_m: float) -> Occluder:
        far = far_mm.float()
        return cls(torch.where(far < UNKNOWN_FAR_MM, far / 1000.0, float("inf")), radius_px, margin_m)


def default_radius_px(width: int) -> int:
    """The window an Occluder tests footprints in: 6 pixels at 160 wide, scaled with the image width (a map's
    Gaussians span about as many pixels of their views at any mapping resolution); at least 3, as the projection's
    blur alone gives every footprint a reach of 2.8 pixels."""
    return max(3, round(6 * width / 160))
