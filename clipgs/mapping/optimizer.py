"""Adam over Gaussian parameters whose state follows added and removed Gaussians.

Each Gaussian (row) keeps its own step count, so a newly added Gaussian gets Adam's bias correction
from its first step, however long the map has been optimised.
"""
from __future__ import annotations

import torch
from torch import Tensor

from clipgs.mapping.gaussian_map import GaussianMap


class GaussianAdam:
    """params: leaf tensors by GaussianMap field name, first dim N; lrs: learning rate per field."""

    def __init__(self, gmap: GaussianMap, lrs: dict[str, float], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-15) -> None:
        self.lrs, self.betas, self.eps = dict(lrs), betas, eps
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in gmap.tensors().items()}
        self.exp_avg = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.steps = torch.zeros(len(gmap), dtype=torch.float64, device=gmap.means.device)

    @property
    def map(self) -> GaussianMap:
        """The current parameters as a map (sharing the leaf tensors: differentiable)."""
        return GaussianMap(**self.params)

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        self.steps += 1
        bc1 = (1 - b1**self.steps).to(self.params["means"].dtype)
        bc2 = (1 - b2**self.steps).to(self.params["means"].dtype)
        for k, p in self.params.items():
            lr = self.lrs.get(k, 0.0)
            if p.grad is None or lr == 0.0 or p.numel() == 0:
                continue
            m, v = self.exp_avg[k], self.exp_avg_sq[k]
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            shape = (-1,) + (1,) * (p.dim() - 1)
            p.sub_(lr * (m / bc1.view(shape)) / ((v / bc2.view(shape)).sqrt() + self.eps))

    def extend(self, new: GaussianMap) -> None:
        """Append Gaussians with fresh (zero) optimiser state."""
        for k, v in new.tensors().items():
            self.params[k] = torch.cat([self.params[k].detach(), v.to(self.params[k])]).requires_grad_(True)
            self.exp_avg[k] = torch.cat([self.exp_avg[k], torch.zeros_like(v).to(self.exp_avg[k])])
            self.exp_avg_sq[k] = torch.cat([self.exp_avg_sq[k], torch.zeros_like(v).to(self.exp_avg_sq[k])])
        self.steps = torch.cat([self.steps, torch.zeros(len(new), dtype=self.steps.dtype, device=self.steps.device)])

    def keep(self, index: Tensor) -> None:
        """Keep only the Gaussians selected by ``index`` (bool mask or indices), state included."""
        for k in self.params:
            self.params[k] = self.params[k].detach()[index].requires_grad_(True)
            self.exp_avg[k] = self.exp_avg[k][index]
            self.exp_avg_sq[k] = self.exp_avg_sq[k][index]
        self.steps = self.steps[index]
