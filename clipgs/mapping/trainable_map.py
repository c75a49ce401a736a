"""TrainableMap: the map being optimised, and the Adam state that follows every edit of it.

One :class:`GaussianMap` whose tensors are leaf parameters; ``select`` and ``extend`` are the only ways to
change which Gaussians exist, and both keep the optimiser state in step. Each Gaussian (row) keeps its own
Adam step count, so a Gaussian added late gets Adam's bias correction from its first step. On the CPU a
step is one compiled pass over the stepping rows of every field, step counts included (csrc/adam_cpu.cpp);
elsewhere, or with ``fused=False``, the same arithmetic in PyTorch ops.

A step may train only the Gaussians its camera sees (``working_set(camera)`` -> render ->
``step(only, rows, working, rendered)``: selective Adam, as gsplat's ``visible_adam``): the others keep their
parameters, moments and step counts, and the step's cost follows the view instead of the map.
"""
from __future__ import annotations

import ctypes
from collections.abc import Collection

import torch
from torch import Tensor

from clipgs.data.frame import Camera
from clipgs.mapping.gaussian_map import GaussianMap
from clipgs.render import Occluder, cpu_kernel


def bias_corrections(steps: Tensor, betas: tuple[float, float], dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(1 - beta1^steps, 1 - beta2^steps) per row, (N,) in ``dtype``; ``steps`` (N,) float64."""
    return (1 - betas[0] ** steps).to(dtype), (1 - betas[1] ** steps).to(dtype)


def adam_step_torch(p: Tensor, grad: Tensor, m: Tensor, v: Tensor, bias: tuple[Tensor, Tensor], lr: float,
                    betas: tuple[float, float], eps: float) -> None:
    """In place: one Adam step of ``p`` (N, ...) with per-row bias corrections ``bias`` (N,) each (see
    :func:`bias_corrections`). The reference for the fused CPU kernel."""
    b1, b2 = betas
    shape = (-1,) + (1,) * (p.dim() - 1)
    bc1, bc2 = bias[0].view(shape), bias[1].view(shape)
    m.mul_(b1).add_(grad, alpha=1 - b1)
    v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    p.sub_(lr * (m / bc1) / ((v / bc2).sqrt() + eps))


def adam_fields_fused(fields: list[tuple[Tensor, Tensor, Tensor, Tensor, float]], steps: Tensor,
                      map_rows: Tensor | None, mask: Tensor | None, betas: tuple[float, float], eps: float) -> None:
    """One Adam step of several per-Gaussian fields in one compiled pass (CPU, float32/float64, contiguous), the
    per-row step counts and bias corrections included: :func:`adam_step_torch` for each field on the stepping rows.

    fields: (param (N, ...), grad (n, ...), exp_avg, exp_avg_sq (N, ...), lr) each; steps: (N,) float64 per-row
    counts, incremented in place where a row steps; map_rows: (n,) int64 the map row of each gradient row (None:
    the same row, n == N); mask: (n,) bool, the gradient rows that step (None: all)."""
    dtype = fields[0][0].dtype if fields else torch.float32
    fn = getattr(cpu_kernel.load(), f"clipgs_adam_fields_{'f64' if dtype == torch.float64 else 'f32'}")
    held = [(p, g.contiguous(), m, v) for p, g, m, v, _ in fields]  # named: contiguous copies live until it returns
    arrays = [(ctypes.c_void_p * max(len(held), 1))(*[t[j].data_ptr() for t in held]) for j in range(4)]
    widths = (ctypes.c_int64 * max(len(held), 1))(*[p[0].numel() for p, *_ in held])  # rows are never empty here
    lrs = (ctypes.c_double * max(len(held), 1))(*[lr for *_, lr in fields])
    rows = None if map_rows is None else map_rows.contiguous()
    flags = None if mask is None else mask.contiguous().view(torch.uint8)
    n = len(steps) if rows is None else len(rows)
    fn(n, None if rows is None else rows.data_ptr(), None if flags is None else flags.data_ptr(), steps.data_ptr(),
       len(held), *[ctypes.cast(a, ctypes.c_void_p) for a in arrays], ctypes.cast(widths, ctypes.c_void_p),
       ctypes.cast(lrs, ctypes.c_void_p), betas[0], betas[1], eps, torch.get_num_threads())


def adam_rows_torch(p: Tensor, grad: Tensor, m: Tensor, v: Tensor, rows: Tensor, bias: tuple[Tensor, Tensor],
                    lr: float, betas: tuple[float, float], eps: float) -> None:
    """Reference of :func:`adam_rows_fused`: gather the rows, step them, write them back."""
    pr, mr, vr = p[rows], m[rows], v[rows]
    adam_step_torch(pr, grad, mr, vr, bias, lr, betas, eps)
    for full, part in ((p, pr), (m, mr), (v, vr)):
        full.index_copy_(0, rows, part)


def _fusable(*tensors: Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and t.is_contiguous()
               for t in tensors) and cpu_kernel.available()


class TrainableMap:
    """gaussians: the live map (leaf tensors, differentiable); lrs: Adam learning rate per GaussianMap field
    (a field without one is never updated)."""

    def __init__(self, gaussians: GaussianMap, lrs: dict[str, float], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-15, fused: bool = True) -> None:
        self.lrs, self.betas, self.eps, self.fused = dict(lrs), betas, eps, fused
        self.gaussians = self._leaves({k: v.detach().clone() for k, v in gaussians.tensors().items()})
        self._exp_avg = {k: torch.zeros_like(v) for k, v in gaussians.tensors().items()}
        self._exp_avg_sq = {k: torch.zeros_like(v) for k, v in gaussians.tensors().items()}
        self._steps = torch.zeros(len(gaussians), dtype=torch.float64, device=gaussians.means.device)
        self._extras: dict[str, Tensor] = {}  # per-Gaussian rows that are not optimised (see ``extra``)

    @staticmethod
    def _leaves(tensors: dict[str, Tensor], only: Collection[str] | None = None) -> GaussianMap:
        """A map of fresh leaf tensors (the given ones are new tensors already: indexed or concatenated), those
        not in ``only`` (None: all) without gradient."""
        return GaussianMap(**{k: v.detach().requires_grad_(only is None or k in only) for k, v in tensors.items()})

    def __len__(self) -> int:
        return len(self.gaussians)

    def snapshot(self) -> GaussianMap:
        """A detached copy, unaffected by later steps and edits."""
        return self.gaussians.detach()

    # ----------------------------------------------------------------- optimisation
    def zero_grad(self) -> None:
        for p in self.gaussians.tensors().values():
            p.grad = None

    def working_set(self, camera: Camera | None = None, backend: str = "auto", occluder: Occluder | None = None,
                    only: Collection[str] | None = None) -> tuple[GaussianMap, Tensor | None]:
        """What a step on ``camera`` trains: fresh leaf copies of the Gaussians it may see (a cheap superset,
        ``GaussianMap.rows_in_view``; in map order, so they render the same image) and their indices
        (V,); or the live map itself and None when ``camera`` is None or may see all of them or none.
        occluder: less those the view's observed surface hides. only: the fields the step trains; the others
        come without gradient (the live map's as detached views), so its backward computes none for them."""
        g = self.gaussians
        rows = None if camera is None or len(g) == 0 else g.rows_in_view(camera, backend, occluder)
        if rows is None or len(rows) in (0, len(g)):
            return g if only is None else GaussianMap(**{k: v if k in only else v.detach()
                                                         for k, v in g.tensors().items()}), None
        with torch.no_grad():
            return self._leaves(g.select(rows).tensors(), only), rows

    @torch.no_grad()
    def step(self, only: Collection[str] | None = None, rows: Tensor | None = None,
             working: GaussianMap | None = None, rendered: Tensor | None = None) -> None:
        """One Adam step on the fields with a gradient (``only``: just these fields, e.g. {'semantics'}).

        rows, working: the step trained ``working_set(...)``; rendered: (len(working),) bool, those of them
        the render composited (``RenderOutput.visible``). Only those rows step (selective Adam, as gsplat's
        ``visible_adam``): the others keep their parameters, moments and step counts. Without ``rows``,
        ``rendered`` alone selects rows of the whole map the same way."""
        source = self.gaussians if rows is None else working
        state = [(p, getattr(source, k).grad, self._exp_avg[k], self._exp_avg_sq[k], self.lrs.get(k, 0.0))
                 for k, p in self.gaussians.tensors().items() if only is None or k in only]
        state = [field for field in state if field[1] is not None and field[4] != 0.0 and field[0].numel() > 0]
        dtype = self.gaussians.means.dtype
        if self.fused and _fusable(self._steps) and all(p.dtype == g.dtype == dtype and _fusable(p, m, v)
                                                        for p, g, m, v, _ in state):
            adam_fields_fused(state, self._steps, rows, rendered, self.betas, self.eps)
            return
        if rendered is not None and bool(rendered.all()):
            rendered = None  # every row of the working set steps: no gather
        if rendered is not None:
            pick = torch.nonzero(rendered).squeeze(1)
            rows = pick if rows is None else rows[pick]
        if rows is None:
            self._steps += 1
            steps = self._steps
        else:
            self._steps[rows] += 1
            steps = self._steps[rows]
        bias = bias_corrections(steps, self.betas, dtype)
        for p, grad, m, v, lr in state:
            grad = grad if rendered is None else grad.index_select(0, pick)
            if rows is None:
                adam_step_torch(p, grad, m, v, bias, lr, self.betas, self.eps)
            else:
                adam_rows_torch(p, grad, m, v, rows, bias, lr, self.betas, self.eps)

    def extra(self, name: str, width: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """(N, width) per-Gaussian buffer ``name`` (e.g. a channel trainer's label votes), created zero on first
        use and kept in step with ``select`` and ``extend`` (new Gaussians get zero rows). Update it in place."""
        rows = self._extras.get(name)
        if rows is None or rows.shape[1] != width:
            rows = self._extras[name] = torch.zeros(len(self), width, dtype=dtype, device=self.gaussians.means.device)
        return rows

    # ----------------------------------------------------------------- edits
    def select(self, index: Tensor) -> None:
        """Keep only the Gaussians selected by ``index`` (bool mask (N,) or indices), optimiser state included."""
        self.gaussians = self._leaves({k: v[index] for k, v in self.gaussians.tensors().items()})
        self._exp_avg = {k: v[index] for k, v in self._exp_avg.items()}
        self._exp_avg_sq = {k: v[index] for k, v in self._exp_avg_sq.items()}
        self._steps = self._steps[index]
        self._extras = {k: v[index] for k, v in self._extras.items()}

    def extend(self, new: GaussianMap) -> None:
        """Append Gaussians with fresh (zero) optimiser state; ``new`` must have the same channels."""
        if new.sem_dim != self.gaussians.sem_dim:
            raise ValueError(f"cannot add Gaussians with {new.sem_dim} semantic channels to a map with "
                             f"{self.gaussians.sem_dim}")
        mine = self.gaussians.tensors()
        self.gaussians = self._leaves({k: torch.cat([mine[k].detach(), v.to(mine[k])])
                                       for k, v in new.tensors().items()})
        for state in (self._exp_avg, self._exp_avg_sq):
            for k, v in new.tensors().items():
                state[k] = torch.cat([state[k], torch.zeros_like(v).to(state[k])])
        self._steps = torch.cat([self._steps, self._steps.new_zeros(len(new))])
        self._extras = {k: torch.cat([v, v.new_zeros(len(new), v.shape[1])]) for k, v in self._extras.items()}
