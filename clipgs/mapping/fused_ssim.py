"""The compiled fused SSIM (csrc/ssim.cpp): forward and the render's gradient in two passes over the image.

PyTorch's grouped convolutions made SSIM half of a 640x480 mapping step (28-35 ms forward, 44-54 ms backward
on 2 cores); the fused kernel blurs the five moments row by row and keeps the three per-pixel partials the
gradient needs, so the backward is one more blur. Same values and gradients as
:func:`clipgs.mapping.losses.ssim_reference` (tests compare them in float64 and float32).
"""
from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from clipgs.native import load_or_warn

SOURCE = Path(__file__).with_name("csrc") / "ssim.cpp"


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    """The compiled SSIM, or None (one warning) where it cannot be built: PyTorch's convolutions then."""
    lib = load_or_warn("clipgs_ssim", [SOURCE], "compiled SSIM unavailable, PyTorch's convolutions compute it")
    if lib is None:
        return None
    p, i64, f64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
    for suffix in ("f32", "f64"):
        forward = getattr(lib, f"clipgs_ssim_forward_{suffix}")
        forward.argtypes, forward.restype = [i64, i64, i64, p, p, p, i64, f64, f64, p, i32], f64
        backward = getattr(lib, f"clipgs_ssim_backward_{suffix}")
        backward.argtypes, backward.restype = [i64, i64, i64, p, p, p, i64, p, f64, p, i32], None
    return lib


def available() -> bool:
    return _library() is not None


def _ptr(t: Tensor | None) -> ctypes.c_void_p | None:
    return None if t is None else ctypes.c_void_p(t.data_ptr())


class _FusedSsim(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, taps: Tensor, c1: float, c2: float) -> Tensor:
        lib, suffix = _library(), "f64" if x.dtype == torch.float64 else "f32"
        channels, h, w = x.shape
        partials = torch.empty(3, channels, h, w, dtype=x.dtype) if ctx.needs_input_grad[0] else None
        total = getattr(lib, f"clipgs_ssim_forward_{suffix}")(channels, h, w, _ptr(x), _ptr(y), _ptr(taps), len(taps),
                                                              c1, c2, _ptr(partials), torch.get_num_threads())
        ctx.save_for_backward(x, y, taps, partials)
        return torch.tensor(total / x.numel(), dtype=x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, y, taps, partials = ctx.saved_tensors
        channels, h, w = x.shape
        grad_x = torch.empty_like(x)
        getattr(_library(), f"clipgs_ssim_backward_{'f64' if x.dtype == torch.float64 else 'f32'}")(
            channels, h, w, _ptr(x), _ptr(y), _ptr(taps), len(taps), _ptr(partials), float(grad) / x.numel(),
            _ptr(grad_x), torch.get_num_threads())
        return grad_x, None, None, None, None


def usable(a: Tensor, b: Tensor) -> bool:
    """Whether the fused kernel can compute ssim(a, b): CPU float32/64 tensors, no gradient wanted for b."""
    return (a.device.type == "cpu" and b.device.type == "cpu" and a.dtype in (torch.float32, torch.float64)
            and not b.requires_grad and available())


def fused_ssim(a: Tensor, b: Tensor, taps: Tensor, c1: float, c2: float) -> Tensor:
    """Mean SSIM of (H, W, C) images a (differentiable) and b (not); taps: the (window,) 1D Gaussian."""
    x = a.permute(2, 0, 1).contiguous()
    y = b.detach().to(a.dtype).permute(2, 0, 1).contiguous()
    return _FusedSsim.apply(x, y, taps.to(a.dtype).contiguous(), c1, c2)
