"""Where to add Gaussians at a new keyframe."""
from __future__ import annotations

import math

import numpy as np

from clipgs.data.frame import Frame
from clipgs.render import RenderOutput


def growth_mask(render: RenderOutput, frame: Frame, alpha_threshold: float, depth_margin: float) -> np.ndarray:
    """(H, W) bool: valid-depth pixels the map does not explain yet.

    Either the rendered silhouette is thin (alpha < ``alpha_threshold``) or the observed surface lies
    clearly in front of the rendered one (observed < rendered * (1 - depth_margin)): new geometry.
    """
    alpha = render.alpha.detach().cpu().numpy()
    rendered = render.expected_depth().detach().cpu().numpy()
    observed = frame.depth
    valid = observed > 0
    thin = alpha < alpha_threshold
    in_front = (alpha >= alpha_threshold) & (observed < rendered * (1.0 - depth_margin))
    return valid & (thin | in_front)


AUTO_STRIDE_SAMPLES = 160 * 120  # growth samples of a full view when the stride is auto (0)


def auto_pixel_stride(width: int, height: int) -> int:
    """Growth stride giving a view about AUTO_STRIDE_SAMPLES samples: the map's density (and cost) per keyframe
    does not grow with the mapping resolution; 1 at 160x120, 2 at 320x240, 4 at 640x480."""
    return max(1, round(math.sqrt(width * height / AUTO_STRIDE_SAMPLES)))
