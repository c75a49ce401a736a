"""Importing torchvision (needed by open_clip and segment-anything) on a CPU-only torch.

PyPI's torchvision for the pinned torch is a CUDA build: importing it with CPU torch fails with
"operator torchvision::nms does not exist". Only then, clipgs defines CPU versions of the two compiled
ops torchvision's Python side needs at import (``nms`` and ``qnms``) and imports it again. Everything
open_clip and segment-anything use (transforms, ops.nms) then works. A working torchvision is untouched.
"""
from __future__ import annotations

import sys

import torch

_library = None  # keeps the registration alive


def _nms_cpu(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression; dets (N, 4) as x1, y1, x2, y2. Returns kept indices by score."""
    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True)
    keep = []
    suppressed = torch.zeros(len(dets), dtype=torch.bool)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas - inter).clamp(min=1e-12)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long)


def _register_cpu_ops() -> None:
    global _library
    if _library is not None:
        return
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.impl("nms", _nms_cpu, "CPU")
    lib.impl("qnms", _nms_cpu, "CPU")
    _library = lib


def import_torchvision():
    """Import torchvision, registering CPU fallbacks first where its compiled ops are missing."""
    try:
        import torchvision

        return torchvision
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # drop the half-imported package
    _register_cpu_ops()
    import torchvision
    import torchvision.extension

    torchvision.extension._has_ops = lambda: True  # ops.nms checks this before calling the op we registered
    return torchvision
