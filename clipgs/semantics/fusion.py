"""3D label fusion: every Gaussian counts the classes the 2D teacher's masks gave it over all the views that saw it.

A teacher that errs independently between views (a wrong class for one mask in one view) is outvoted per
Gaussian: each keyframe's masks are classified against the vocabulary, and the class image is splatted back
onto the Gaussians with their compositing weights (:func:`clipgs.render.splat_to_gaussians`), so a Gaussian
seen by many keyframes holds many votes. Each Gaussian's plurality class, rendered into a keyframe, gives
pixel targets for the decoded attributes there. Unlike 3DCS' pseudo-labels (the decoded map voted inside
one view's masks) the evidence is the teacher's, gathered over every view of each Gaussian, and the decoded
map's own speckle does not vote. Errors the teacher repeats in most views (a cabinet read as a table from
everywhere) win the vote as well: fusion does not undo those.

Only the Gaussians a view may see and only the classes it involves are rendered (a vote splats the classes
its masks read; labels render the classes of the Gaussians in view): the kernels' cost grows with the channel
count, and a vote costs what the view holds, not what the map holds. 3DCS' support test renders only the
classes some Gaussian gives its threshold (:func:`support_channels`).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from clipgs.data.frame import Camera
from clipgs.mapping.gaussian_map import GaussianMap
from clipgs.mapping.keyframes import Keyframe
from clipgs.render import COLOR_CHANNELS, RenderOutput, rasterize, splat_to_gaussians
from clipgs.semantics.refit import evenly_spaced
from clipgs.semantics.sources import MaskEmbeddings
from clipgs.semantics.supervision import compact_ids

MIN_CLASS_SHARE = 0.01  # a class carrying less than this of every mask's soft vote is left out of the splat
SHARE_BLOCK_ROWS = 16384  # Gaussians whose vote shares support_channels holds at once


def mask_class_image(masks: MaskEmbeddings, vocabulary: Tensor, tau: float) -> Tensor:
    """(H, W, C) soft class of each pixel's mask: softmax over the vocabulary rows 1.. of the mask embedding's
    cosine / tau (row 0, void, gets 0), zeros outside masks. vocabulary: (C, D) unit text embeddings."""
    ids = masks.mask_ids.to(vocabulary.device).long()
    emb = F.normalize(masks.embeddings.to(vocabulary), dim=-1)
    soft = torch.softmax(emb @ vocabulary[1:].T / tau, dim=-1)  # (M, C-1)
    per_mask = torch.cat([soft.new_zeros(len(soft), 1), soft], dim=1)
    image = per_mask[ids.clamp(min=0)]
    return torch.where((ids >= 0)[..., None], image, 0.0)


def splat_votes(votes: Tensor, gaussians: GaussianMap, camera: Camera, class_image: Tensor,
                backend: str = "auto") -> None:
    """Add one view's votes to ``votes`` (N, C) in place: each Gaussian's compositing weight on the pixels of
    each class (``class_image`` (H, W, C)); classes with under 1 % of every pixel's vote are skipped. Only
    the Gaussians the camera may see are splatted (the same weights, a cost that follows the view)."""
    present = torch.nonzero(class_image.reshape(-1, class_image.shape[-1]).amax(dim=0) >= MIN_CLASS_SHARE)
    present = present.squeeze(1)
    rows = gaussians.rows_in_view(camera, backend)
    if len(present) == 0 or len(rows) == 0:
        return
    g = gaussians.select(rows)  # splat_to_gaussians takes no gradient through them
    part = splat_to_gaussians(g.means, g.quats, g.log_scales, g.opacity_logits, camera,
                              class_image[..., present].to(g.means), backend=backend)
    votes[rows.to(votes.device)[:, None], present.to(votes.device)[None, :]] += part.to(votes)


@torch.no_grad()
def render_fused_labels(gaussians: GaussianMap, votes: Tensor, camera: Camera, min_share: float,
                        backend: str = "auto") -> Tensor:
    """(H, W) int64 the fused class (vocabulary row) a view sees, -1 where the map is empty (alpha <= 0.5) or no
    class has ``min_share`` of the rendered weight. Each Gaussian renders its plurality class one-hot (none
    when it has no votes), so a pixel's classes come from the Gaussians it blends, never from a blend. Only
    the Gaussians the camera may see are rendered, with the classes among them as channels."""
    labels = torch.full((camera.height, camera.width), -1, dtype=torch.long, device=gaussians.means.device)
    rows = gaussians.rows_in_view(camera, backend)
    votes = votes[rows.to(votes.device)]
    voted = votes.sum(dim=1) > 0
    plurality = votes.argmax(dim=1)
    classes = torch.unique(plurality[voted])
    if len(classes) == 0:
        return labels
    channel = torch.full((votes.shape[1],), -1, dtype=torch.long, device=votes.device)
    channel[classes] = torch.arange(len(classes), device=votes.device)
    onehot = F.one_hot(channel[plurality].clamp(min=0), len(classes)).to(gaussians.means.dtype)
    onehot = onehot * voted[:, None].to(onehot)  # no votes: no class
    g = gaussians.select(rows)
    out = rasterize(g.means, g.quats, g.log_scales, g.opacity_logits, onehot.to(g.means.device), camera,
                    backend=backend)
    share, pick = out.image.max(dim=-1)
    keep = (out.alpha > 0.5) & (share >= min_share * out.alpha) & (share > 0)
    return torch.where(keep, classes.to(pick.device)[pick], labels)


@dataclasses.dataclass
class VoteSupport:
    """A view's rendered vote shares (:func:`render_with_support`) for the classes that can pass a support test.

    shares: (H, W, K + 1) the compositing-weighted vote shares of ``classes``, then the weight of voted Gaussians.
    classes: (K,) the vocabulary rows those K channels carry (:class:`SupportChannels`); every other class's
        support is below the share they were chosen with and comes back 0.
    """

    shares: Tensor
    classes: Tensor
    vocabulary_size: int

    def of(self, labels: Tensor) -> Tensor:
        """(H, W) the share of the teacher's votes that went to each pixel's label (``labels`` (H, W) vocabulary
        rows, -1 = none): over the Gaussians a pixel blends, the votes for its label against all their votes. 0
        where there is no label, no voted Gaussian or no channel for the label: a class the teacher never gave
        that surface in any view has no support."""
        shares, classes = self.shares.to(labels.device), self.classes.to(labels.device)
        channel = torch.full((self.vocabulary_size,), -1, dtype=torch.long, device=labels.device)
        channel[classes] = torch.arange(len(classes), device=labels.device)
        pick = torch.where(labels >= 0, channel[labels.clamp(min=0)], -1)
        voted = shares[..., -1]
        share = shares[..., :-1].gather(-1, pick.clamp(min=0)[..., None])[..., 0] if len(classes) else voted * 0
        return torch.where((pick >= 0) & (voted > 1e-6), share / voted.clamp(min=1e-6), torch.zeros_like(share))


@dataclasses.dataclass
class SupportChannels:
    """Per-Gaussian channels whose render gives a view's vote support (:func:`support_channels`).

    channels: (N, K + 1) each Gaussian's share of its votes for each of ``classes``, then 1 where it has any vote
        (0 where none); rendered, they give per pixel the compositing-weighted shares and the weight of voted
        Gaussians.
    classes: (K,) vocabulary rows, those some Gaussian gives at least the ``min_share`` they were chosen with.
    """

    channels: Tensor
    classes: Tensor
    vocabulary_size: int


@torch.no_grad()
def support_channels(votes: Tensor, min_share: float = 0.0) -> SupportChannels:
    """The channels :func:`render_with_support` composites, from the Gaussians' votes (N, C): only the classes
    whose share reaches ``min_share`` on some Gaussian. A class below it on every Gaussian has a support below it
    on every pixel (a weighted mean of shares), so a support test at ``min_share`` decides the same, while the
    render's cost and memory follow the classes the map holds, not the vocabulary (the room's map with 200 classes
    at 0.1: 15 channels, a 160x120 view 11 ms instead of 67). Computed once for the views of a 3DCS round (the
    votes do not change between them; each view had recomputed every share)."""
    total = votes.sum(dim=1, keepdim=True)
    top = votes.new_zeros(votes.shape[1])  # each class's largest share, in row blocks: no (N, C) copy of the votes
    for start in range(0, len(votes), SHARE_BLOCK_ROWS):
        block = slice(start, start + SHARE_BLOCK_ROWS)
        top = torch.maximum(top, (votes[block] / total[block].clamp(min=1e-12)).amax(dim=0))
    classes = torch.nonzero(top >= min_share).squeeze(1)
    channels = torch.cat([votes[:, classes] / total.clamp(min=1e-12), (total > 0).to(votes)], dim=1)
    return SupportChannels(channels, classes, votes.shape[1])


@torch.no_grad()
def render_with_support(gaussians: GaussianMap, support: SupportChannels, camera: Camera,
                        backend: str = "auto") -> tuple[RenderOutput, VoteSupport]:
    """The map's render (colour + attributes, as ``GaussianMap.render``) and, from the same pass, its vote
    shares for :meth:`VoteSupport.of`: one projection, binning and set of compositing weights for both (a second
    render had cost 3DCS as much as the first)."""
    g = gaussians
    if len(support.channels) != len(g):
        raise ValueError(f"support channels for {len(support.channels)} Gaussians, the map has {len(g)}")
    parts = (*g.channel_parts(), support.channels.to(g.means))
    out = rasterize(g.means, g.quats, g.log_scales, g.opacity_logits, parts, camera, backend=backend)
    keep = COLOR_CHANNELS + g.sem_dim
    return dataclasses.replace(out, image=out.image[..., :keep]), VoteSupport(out.image[..., keep:], support.classes,
                                                                           support.vocabulary_size)


def keyframes_to_vote(annotated: list[Keyframe], revote: int, cursor: int,
                      limit: int | None = None) -> tuple[list[Keyframe], int]:
    """The keyframes whose masks have not voted yet (the new one; late ones with ``async_source``; at most
    ``limit``, spread evenly, first and last included) and ``revote`` older ones in turn from ``cursor`` on
    (Gaussians grown since they voted get their votes too); the next cursor."""
    todo = [kf for kf in annotated if not kf.annotation.voted]
    todo = todo if limit is None else evenly_spaced(todo, limit)
    older = [kf for kf in annotated if kf.annotation.voted]
    if not older:
        return todo, cursor
    return todo + [older[(cursor + j) % len(older)] for j in range(min(revote, len(older)))], \
        (cursor + revote) % len(older)


@torch.no_grad()
def vote_and_label(keyframes: list[Keyframe], votes: Tensor, gaussians: GaussianMap, vocabulary: Tensor, tau: float,
                   min_share: float, backend: str = "auto", label: bool = True) -> None:
    """Each keyframe's masks splat their classes onto the Gaussians' ``votes`` (N, C); then (``label``) each gets
    the fused classes rendered into its view as pixel targets (``annotation.fused_labels``, -1 below
    ``min_share``)."""
    for kf in keyframes:
        splat_votes(votes, gaussians, kf.camera, mask_class_image(kf.annotation.masks, vocabulary, tau), backend)
        kf.annotation.voted = True
    for kf in keyframes if label else []:
        labels = render_fused_labels(gaussians, votes, kf.camera, min_share, backend)
        kf.annotation.fused_labels = compact_ids(labels.cpu())
