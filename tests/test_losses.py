"""Mapping losses: SSIM (compiled fused kernel, PyTorch separable reference) against a direct 2D-window
reference, values and gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipgs.mapping import fused_ssim
from clipgs.mapping.losses import depth_l1, ssim, ssim_reference


def ssim_direct(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Textbook SSIM: one 2D Gaussian window per moment, each moment convolved separately."""
    x, y = a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None]
    C = x.shape[1]
    t = torch.arange(window, dtype=a.dtype) - (window - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :]).expand(C, 1, window, window)

    def blur(z):
        return F.conv2d(z, w, padding=window // 2, groups=C)

    mu_x, mu_y = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2, blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))).mean()


@pytest.mark.parametrize("fn", [ssim, ssim_reference])
@pytest.mark.parametrize("shape", [(37, 53, 3), (5, 9, 3), (64, 16, 1)])
def test_ssim_matches_the_direct_window(fn, shape):
    """Both the fused kernel (ssim on CPU tensors) and the separable PyTorch reference, in float64: values and
    gradients to rounding, images smaller than the window included."""
    if fn is ssim and not fused_ssim.available():
        pytest.skip("no C++ compiler for the fused SSIM")
    g = torch.Generator().manual_seed(0)
    target = torch.rand(*shape, generator=g, dtype=torch.float64)
    image = (target + 0.2 * torch.randn(*shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    grads = []
    for f in (fn, ssim_direct):
        x = image.clone().requires_grad_(True)
        value = f(x, target)
        value.backward()
        grads.append((value.detach(), x.grad))
    (v, gx), (v_ref, gx_ref) = grads
    assert 0.05 < float(v_ref) < 0.9
    assert abs(float(v - v_ref)) < 1e-12
    assert float((gx - gx_ref).abs().max()) < 1e-12 * float(gx_ref.abs().max()) + 1e-15


def test_fused_ssim_float32_and_when_it_steps_aside():
    if not fused_ssim.available():
        pytest.skip("no C++ compiler for the fused SSIM")
    g = torch.Generator().manual_seed(3)
    target = torch.rand(48, 70, 3, generator=g)
    base = (target + 0.1 * torch.randn(48, 70, 3, generator=g)).clamp(0, 1)
    a, b = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    fused, ref = ssim(a, target), ssim_reference(b, target)
    (fused + 0).backward()
    ref.backward()
    assert abs(float(fused.detach() - ref.detach())) < 1e-6
    assert float((a.grad - b.grad).abs().max()) < 1e-4 * float(b.grad.abs().max())
    assert fused_ssim.usable(a, target) and not fused_ssim.usable(a, target.clone().requires_grad_(True))
    strided = torch.rand(20, 30, 8, generator=g)[..., 2:5]  # a view, as a render's RGB channels are
    assert abs(float(ssim(strided, target[:20, :30]) - ssim_reference(strided, target[:20, :30]))) < 1e-6


def test_ssim_of_identical_images_is_one_and_drops_with_noise():
    img = torch.rand(24, 32, 3, generator=torch.Generator().manual_seed(1))
    assert abs(float(ssim(img, img)) - 1.0) < 1e-5
    noisy = (img + 0.3 * torch.randn(img.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    assert float(ssim(noisy, img)) < 0.8


def test_depth_l1_ignores_invalid_pixels():
    observed = torch.tensor([[1.0, 0.0], [2.0, 3.0]])
    rendered = torch.tensor([[1.5, 9.0], [2.0, 2.0]], requires_grad=True)
    d = depth_l1(rendered, observed)
    assert abs(float(d.detach()) - 0.5) < 1e-7
    d.backward()
    assert float(rendered.grad[0, 1]) == 0.0
