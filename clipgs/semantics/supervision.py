"""What supervises the semantic attributes in each view: a keyframe's 2D masks and labels, a 3DCS novel view's."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from clipgs.data.frame import Camera
from clipgs.render import Occluder, RenderOutput
from clipgs.render.occlusion import default_radius_px
from clipgs.semantics.config import SemanticTrainingConfig
from clipgs.semantics.sac import DecodedPixels, SemanticDecoder, sac_losses, weighted_sac
from clipgs.semantics.sources import MaskEmbeddings


@dataclass
class KeyframeSemantics:
    """A keyframe's supervision: the 2D source's masks + embeddings, and its 3DCS pseudo-labels
    ((H, W) vocabulary index, -1 = none; None before the first round). Ids and labels are stored in the
    smallest integer type that holds them (:func:`compact_ids`); callers index with ``.long()``."""

    masks: MaskEmbeddings | None  # None while the source still works on it (``async_source``)
    pseudo_labels: Tensor | None = None
    voted: bool = False  # its masks' classes were splatted onto the Gaussians (3D label fusion)
    fused_labels: Tensor | None = None  # (H, W) the fused classes rendered into it at its last vote, -1 = none
    # decoder replay: (R, d) rendered attribute rows of its last step (no gradient) and their (R,) mask ids
    replay: tuple[Tensor, Tensor] | None = None

    @property
    def nbytes(self) -> int:
        tensors = [self.pseudo_labels, self.fused_labels, *(self.replay or ())]
        tensors += [self.masks.mask_ids, self.masks.embeddings] if self.masks else []
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def replay_batch(pool: list[KeyframeSemantics], current: KeyframeSemantics | None, count: int,
                 generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor] | None:
    """The kept rows of ``count`` keyframes drawn at random from ``pool`` (``current`` and those without rows
    left out), side by side: rows (R, d), mask ids (R,) int64 into embeddings (M, D), the drawn keyframes'
    mask embeddings stacked (so a contrast runs over all of them). None when there is nothing to replay."""
    pool = [a for a in pool if a is not current and a.replay is not None and a.masks is not None]
    if not pool or count == 0:
        return None
    drawn = torch.randperm(len(pool), generator=generator)[:count].tolist()
    return stack_rows([(*pool[j].replay, pool[j].masks.embeddings) for j in drawn])


def replay_loss(decoder: SemanticDecoder, pool: list[KeyframeSemantics], current: KeyframeSemantics | None,
                config: SemanticTrainingConfig, generator: torch.Generator,
                gram: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor | None:
    """Decoder replay: the SAC losses on rows kept by ``sem_replay_keyframes`` other keyframes of ``pool``
    (:func:`replay_batch`; None when there are none). The rows are constants, so only the decoder learns: it keeps
    decoding the rooms out of view as when they were trained instead of drifting to the classes in view (the
    attributes there stay as they were). ``gram``: the decoder's Gram matrix the step has already computed, shared
    (None: computed here)."""
    batch = replay_batch(pool, current, config.sem_replay_keyframes, generator)
    if batch is None:
        return None
    decoded = DecodedPixels(decoder, batch[0], gram=gram)
    return weighted_sac(sac_losses(decoded, batch[1], batch[2], config.sem_tau), config)


def stack_rows(parts: list[tuple[Tensor, Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    """Several views' (rows (R_i, d), mask ids (R_i,), their masks' embeddings (M_i, D)) side by side: rows
    (R, d), ids (R,) int64 into the embeddings stacked (M, D), each row still pointing at its own view's
    embedding (so one contrast runs over all of them)."""
    offsets = [0]
    for _, _, embeddings in parts[:-1]:
        offsets.append(offsets[-1] + len(embeddings))
    rows = torch.cat([r for r, _, _ in parts])
    ids = torch.cat([i.long().to(rows.device) + o for (_, i, _), o in zip(parts, offsets, strict=True)])
    return rows, ids, torch.cat([e for _, _, e in parts]).to(rows)


def label_cross_entropy(logits: Tensor, labels: Tensor, idx: Tensor) -> Tensor | None:
    """Cross-entropy of sampled pixels' vocabulary logits (P, C) (flat indices ``idx`` (P,)) to (H, W) vocabulary
    labels; None when none of them is labelled (-1)."""
    target = labels.reshape(-1)[idx.to(labels.device)].to(logits.device).long()
    keep = target >= 0
    return F.cross_entropy(logits[keep], target[keep]) if bool(keep.any()) else None


def compact_ids(ids: Tensor) -> Tensor:
    """(H, W) ids or labels (-1 = none) as int16 when they fit (below 32768), else int32."""
    top = int(ids.max()) if ids.numel() else 0
    return ids.to(torch.int16 if top < 2**15 else torch.int32)


@dataclass
class NovelView:
    """A 3DCS view between keyframes: pseudo-labels only (its colour is the map's own, no evidence). far_mm: the
    far image (uint16 mm) of the map's own rendered surface there, so its steps leave out what that hides as
    keyframe steps do (None: occlusion culling off)."""

    camera: Camera
    pseudo_labels: Tensor
    far_mm: Tensor | None = None

    @staticmethod
    def surface_far_mm(out: RenderOutput, margin_m: float) -> Tensor | None:
        """The far image of a render's surface (its depth where opacity > 0.5), None if ``margin_m`` is 0."""
        if margin_m <= 0:
            return None
        surface = out.expected_depth(min_alpha=0.5)
        return Occluder.from_depth(surface, default_radius_px(surface.shape[1]), margin_m).far_mm()

    def occluder(self, margin_m: float) -> Occluder | None:
        if self.far_mm is None or margin_m <= 0:
            return None
        return Occluder.from_far_mm(self.far_mm, default_radius_px(self.camera.width), margin_m)
