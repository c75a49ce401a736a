"""Where to add Gaussians at a new keyframe."""
from __future__ import annotations

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
