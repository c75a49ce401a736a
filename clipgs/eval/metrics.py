"""Image metrics."""
from __future__ import annotations

import numpy as np


def psnr(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, max_value: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, max_value]; ``mask`` (H, W) restricts the pixels."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"psnr: shapes differ {pred.shape} vs {target.shape}")
    err = (pred - target) ** 2
    if mask is not None:
        err = err[mask]
    mse = float(err.mean()) if err.size else float("nan")
    return float("inf") if mse == 0 else 10.0 * np.log10(max_value**2 / mse)


def depth_l1(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute depth error in metres over pixels where the target is valid (> 0)."""
    valid = np.asarray(target) > 0
    return float(np.abs(np.asarray(pred)[valid] - np.asarray(target)[valid]).mean()) if valid.any() else float("nan")
