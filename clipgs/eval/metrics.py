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


def semantic_scores(pred: np.ndarray, gt: np.ndarray, n_classes: int, ignore: int = 0) -> tuple[float, float]:
    """(mIoU, pixel accuracy) of one image; pixels whose ground truth is ``ignore`` do not count.

    IoU = TP / (TP + FP + FN) per class over classes present in the ground truth or the prediction
    (others are NaN), then nan-mean; class ``ignore`` is never scored. As the OV-NeRF protocol, per image.
    """
    pred, gt = np.asarray(pred).reshape(-1), np.asarray(gt).reshape(-1)
    keep = gt != ignore
    pred, gt = pred[keep], gt[keep]
    if gt.size == 0:
        return float("nan"), float("nan")
    conf = np.bincount(gt * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    iou[ignore] = np.nan
    return float(np.nanmean(iou)) if np.any(np.isfinite(iou)) else float("nan"), float((pred == gt).mean())
