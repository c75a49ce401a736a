"""Decoder refit: the shared decoder fitted again on every held keyframe once mapping ends (or goes quiet).

During mapping the decoder (shared by every Gaussian) is trained on the keyframes in the optimisation window,
so it decodes best what the walk saw last; decoder replay holds that back with rows kept from each keyframe's
last step, which the Gaussians have moved away from since. The refit renders every held keyframe's attributes
once from the finished map and fits the decoder alone to their masks' embeddings (the SAC losses, and the 3DCS
pseudo-labels at the decoder's share of them while mapping; the Gaussians untouched), a few keyframes per step
so every room weighs the same.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from clipgs.mapping.gaussian_map import GaussianMap
from clipgs.mapping.keyframes import Keyframe
from clipgs.semantics.config import SemanticTrainingConfig
from clipgs.semantics.sac import DecodedPixels, SemanticDecoder, sac_losses, sample_mask_pixels, weighted_sac
from clipgs.semantics.supervision import compact_ids, stack_rows


@dataclass(frozen=True)
class RefitReport:
    """What a refit did: steps, keyframes rendered, the loss per step, seconds (rendering included)."""

    steps: int
    keyframes: int
    losses: list[float]
    seconds: float

    def __str__(self) -> str:
        loss = f", loss {self.losses[0]:.3f} -> {self.losses[-1]:.3f}" if self.losses else ""
        return f"{self.steps} steps over {self.keyframes} keyframes in {self.seconds:.1f} s{loss}"


@dataclass
class RefitRows:
    """One keyframe's rendered attributes at sampled mask pixels: rows (R, d), mask ids (R,) compact,
    embeddings (M, D) unit (its masks'), and its 3DCS pseudo-labels there (R,) compact (-1 none), or None."""

    rows: Tensor
    ids: Tensor
    embeddings: Tensor
    labels: Tensor | None = None


def evenly_spaced(items: list, limit: int) -> list:
    """``items`` if there are at most ``limit``, else ``limit`` of them spread evenly, first and last included
    (a long walk's refit renders a bounded number of keyframes that still cover every room)."""
    if len(items) <= limit:
        return list(items)
    return [items[round(i * (len(items) - 1) / max(limit - 1, 1))] for i in range(limit)]


@torch.no_grad()
def render_refit_rows(gaussians: GaussianMap, keyframes: list[Keyframe], pixels: int, generator: torch.Generator,
                      backend: str = "auto", balance: float = 0.0) -> list[RefitRows]:
    """Rows of every keyframe in ``keyframes`` that has masks: up to ``pixels`` mask pixels each, attributes
    composited at those pixels only; ``balance``: as :func:`sample_mask_pixels`."""
    data = []
    for kf in keyframes:
        masks = kf.annotation.masks if kf.annotation is not None else None
        if masks is None:
            continue
        idx = sample_mask_pixels(masks.mask_ids, pixels, generator, balance)
        if len(idx) == 0:
            continue
        out = gaussians.render(kf.camera, semantic=True, backend=backend, attribute_pixels=idx)
        idx = out.attribute_pixels if out.attribute_pixels is not None else idx
        rows = out.semantics.reshape(-1, gaussians.semantics.shape[1]).index_select(0, idx.to(out.image.device))
        ids = masks.mask_ids.reshape(-1)[idx.to(masks.mask_ids.device)]
        labels = kf.annotation.pseudo_labels
        labels = None if labels is None else labels.reshape(-1)[idx.to(labels.device)].clone()
        data.append(RefitRows(rows.clone(), compact_ids(ids), masks.embeddings, labels))
    return data


def refit_batch(data: list[RefitRows], count: int,
                generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``count`` keyframes' rows drawn at random, side by side: rows (R, d), ids (R,) int64 into the drawn
    keyframes' embeddings stacked (M, D), so the contrast runs over all of them, and labels (R,) int64 (-1:
    none, as for keyframes without pseudo-labels)."""
    drawn = [data[j] for j in torch.randperm(len(data), generator=generator)[:count].tolist()]
    rows, ids, embeddings = stack_rows([(d.rows, d.ids, d.embeddings) for d in drawn])
    labels = [torch.full_like(d.ids, -1, dtype=torch.int64) if d.labels is None else d.labels.long() for d in drawn]
    return rows, ids, embeddings, torch.cat([lab.to(rows.device) for lab in labels])


def refit_loss(decoder: SemanticDecoder, config: SemanticTrainingConfig,
               vocabulary: Tensor | None) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
    """The refit's loss on a :func:`refit_batch`: the SAC losses weighted as in mapping, plus
    ``refit_label_weight`` x the cross-entropy of the labelled rows' vocabulary logits to their pseudo-labels."""
    def loss(rows: Tensor, ids: Tensor, embeddings: Tensor, labels: Tensor) -> Tensor:
        decoded = DecodedPixels(decoder, rows)
        value, keep = weighted_sac(sac_losses(decoded, ids, embeddings, config.sem_tau), config), labels >= 0
        if config.refit_label_weight > 0 and vocabulary is not None and bool(keep.any()):
            logits = decoded.cosines(vocabulary.to(rows)) / config.sem_tau
            value = value + config.refit_label_weight * F.cross_entropy(logits[keep], labels[keep])
        return value
    return loss


def fit_decoder(data: list[RefitRows], steps: int, per_step: int,
                loss: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor],
                optimizer: torch.optim.Optimizer, generator: torch.Generator,
                progress: Callable[[int, int], None] | None = None, step_lock: AbstractContextManager | None = None,
                stop: Callable[[], bool] | None = None) -> list[float]:
    """``steps`` optimiser steps of ``loss(*refit_batch(...))`` on ``per_step`` keyframes' rows each (the
    optimiser holds the decoder's parameters only); returns the losses, one per step. Each step runs inside
    ``step_lock`` (readers of the decoder then never see half a step); ``stop()`` true ends the fit early."""
    losses = []
    for i in range(steps if data else 0):
        if stop is not None and stop():
            break
        with step_lock or contextlib.nullcontext():
            value = loss(*refit_batch(data, per_step, generator))
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
        losses.append(float(value.detach()))
        if progress is not None:
            progress(i + 1, steps)
    return losses


def refit_decoder(decoder: SemanticDecoder, optimizer: torch.optim.Optimizer, keyframes: list[Keyframe],
                  gaussians: GaussianMap, config: SemanticTrainingConfig, vocabulary: Tensor | None,
                  generator: torch.Generator, backend: str = "auto",
                  progress: Callable[[int, int], None] | None = None, step_lock: AbstractContextManager | None = None,
                  stop: Callable[[], bool] | None = None) -> RefitReport:
    """The refit (``config.refit_*``): up to ``refit_steps`` x keyframes-a-step / 2 of ``keyframes`` (each then
    drawn about twice) rendered from ``gaussians``, then ``fit_decoder`` with :func:`refit_loss` (``step_lock``,
    ``stop``: see there). The caller keeps ``gaussians`` from changing meanwhile."""
    t0 = time.perf_counter()
    per_step = max(1, config.sem_pixels // config.refit_pixels)  # a step sees as many rows as a mapping step
    chosen = evenly_spaced(keyframes, max(1, config.refit_steps * per_step // 2))
    data = render_refit_rows(gaussians, chosen, config.refit_pixels, generator, backend, config.sem_mask_balance)
    losses = fit_decoder(data, config.refit_steps, per_step, refit_loss(decoder, config, vocabulary), optimizer,
                         generator, progress, step_lock, stop)
    return RefitReport(len(losses), len(data), losses, time.perf_counter() - t0)
