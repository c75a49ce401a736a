"""3DCS rounds: the map's own semantics voted into pseudo-labels for keyframes and novel views between them.

:class:`CoherentRounds` holds the round machinery of :class:`~clipgs.semantics.trainer.SemanticTrainer` (a mixin:
the trainer owns the state it reads): which keyframes a round relabels, relabelling one keyframe and the views
after it (render, segment, vote inside masks, filter by maturity and teacher support), rounds spread over
keyframes (``dcs_spread``), and the final round when mapping ends. It uses the trainer's ``config``, ``decoder``,
``vocabulary``, ``device``, ``_generator``, ``_support`` and ``_vote``, ``keyframe_loss`` and ``channel_pixels``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from clipgs.data.frame import Camera
from clipgs.mapping import IncrementalMapper
from clipgs.mapping.keyframes import Keyframe
from clipgs.render import RenderOutput
from clipgs.semantics import fusion
from clipgs.semantics.coherence import rendered_segments, split_masks
from clipgs.semantics.refit import evenly_spaced
from clipgs.semantics.self_training import (
    label_rendered_view,
    novel_cameras,
    relabel_indices,
    rendered_share,
    vote_in_masks,
)
from clipgs.semantics.supervision import NovelView, compact_ids


class CoherentRounds:
    """The 3DCS round machinery of the semantic trainer (see the module docstring)."""

    def final_round(self, mapper: IncrementalMapper, stop: Callable[[], bool] | None = None,
                    progress: Callable[[int, int], None] | None = None) -> int:
        """3DCS at the end of mapping (a CPU stream runs no round while it maps, ``dcs_yield``): ``dcs_final_sweeps``
        sweeps, in random order, over up to ``dcs_final_keyframes`` held keyframes spread over the walk, each
        relabelled from the map as the sweep has left it, then trained one semantic-only step (SAC + its new
        pseudo-labels): a label that one view fixes reaches the next. Returns the steps (``stop()`` true: fewer)."""
        chosen, done = evenly_spaced(self._annotated(mapper), self.config.dcs_final_keyframes), 0
        self._vote(mapper, support=True)
        steps = [chosen[k] for _ in range(self.config.dcs_final_sweeps)
                 for k in torch.randperm(len(chosen), generator=self._generator).tolist()]
        while done < len(steps) and not (stop is not None and stop()):
            kf = steps[done]
            self._relabel(mapper, kf, None, [])
            loss_fn = lambda out, kf=kf: (self.keyframe_loss(out, kf, mapper.map.gaussians, {}), {})  # noqa: E731
            mapper.train_step(kf.camera, loss_fn, channels=True, only={"semantics"}, pixels=self.channel_pixels(kf),
                              occluder=kf.occluder(mapper.config.occlusion_margin_m))
            done += 1
            if progress is not None:
                progress(done, len(steps))
        self.pseudo_label_rounds += bool(done)
        return done

    def _round_items(self, mapper: IncrementalMapper) -> list[tuple[Keyframe, Camera | None]]:
        """A round's work: (keyframe to relabel, the next annotated keyframe's camera or None)."""
        annotated = self._annotated(mapper)
        settled = max(len(annotated) - self.config.dcs_min_age, 0)  # the newest keep the teacher's word for now
        return [(annotated[i], annotated[i + 1].camera if i + 1 < len(annotated) else None)
                for i in self.relabel_set(settled)]

    @torch.no_grad()
    def _relabel(self, mapper: IncrementalMapper, kf: Keyframe, next_camera: Camera | None,
                 views: list[NovelView]) -> None:
        """Pseudo-labels for one keyframe (votes of the decoded map inside its 2D masks) and for the novel views
        between it and ``next_camera`` (appended to ``views``)."""
        c = self.config
        vocab = self.vocabulary.to(self.device)
        out, support = self._render(mapper, kf.camera)
        masks = kf.annotation.masks.mask_ids.to(self.device).long()
        if c.dcs_split_masks:
            masks = split_masks(masks, rendered_segments(out, max_width=c.dcs_segment_width))
        labels = vote_in_masks(self.decoder.similarity(out.semantics, vocab) / c.dcs_tau, masks, c.dcs_confidence)
        kf.annotation.pseudo_labels = compact_ids(self._filter_labels(mapper, kf.camera, labels, support))
        for camera in novel_cameras([kf.camera, next_camera], c.dcs_novel_views) if next_camera is not None else []:
            out, support = self._render(mapper, camera)
            pseudo = label_rendered_view(out, self.decoder, vocab, c.dcs_confidence, c.dcs_tau, c.dcs_segment_width)
            pseudo = self._filter_labels(mapper, camera, pseudo, support)
            if bool((pseudo >= 0).any()):
                views.append(NovelView(camera, compact_ids(pseudo),
                                       NovelView.surface_far_mm(out, mapper.config.occlusion_margin_m)))

    def _render(self, mapper: IncrementalMapper, camera: Camera) -> tuple[RenderOutput, fusion.VoteSupport | None]:
        """The map from ``camera`` and, with ``dcs_teacher_support``, its vote shares from the same pass (the votes
        were cast as the round's work started: _dcs_work, final_round)."""
        if self.config.dcs_teacher_support <= 0:
            return mapper.render(camera), None
        with mapper.lock:
            return fusion.render_with_support(mapper.map.gaussians, self._support, camera, mapper.config.backend)

    def _filter_labels(self, mapper: IncrementalMapper, camera: Camera, labels: Tensor,
                       support: fusion.VoteSupport | None) -> Tensor:
        """``labels`` (H, W) with -1 where Gaussians younger than ``dcs_mature_keyframes`` carry half the weight,
        and where the teacher's votes (``support``, :meth:`_render`) give the label under ``dcs_teacher_support``."""
        c, g, backend, none = self.config, mapper.map.gaussians, mapper.config.backend, torch.full_like(labels, -1)
        if c.dcs_mature_keyframes > 0:
            old = mapper.map.extra("age_keyframes", 1)[:, 0] >= c.dcs_mature_keyframes
            labels = torch.where(rendered_share(g, old, camera, backend) >= 0.5, labels, none)
        if support is not None:
            labels = torch.where(support.of(labels) >= c.dcs_teacher_support, labels, none)
        return labels

    def _dcs_work(self, mapper: IncrementalMapper, count: int) -> None:
        """Do up to ``count`` items of the open round; when none are left its novel views replace the last
        round's and the round closes."""
        if self._dcs_queue is None:
            return
        self._vote(mapper, support=True)
        for kf, next_camera in self._dcs_queue[:count]:
            self._relabel(mapper, kf, next_camera, self._dcs_next_views)
        del self._dcs_queue[:count]
        if not self._dcs_queue:
            self.novel_views, self._dcs_next_views, self._dcs_queue = self._dcs_next_views, [], None
            self.pseudo_label_rounds += 1

    @torch.no_grad()
    def refresh_pseudo_labels(self, mapper: IncrementalMapper) -> None:
        """3DCS: render keyframes' semantics, label by the vocabulary, vote inside their 2D masks; likewise
        for ``dcs_novel_views`` views between each relabelled keyframe and the next, segmented from their own
        renders. At most ``dcs_max_keyframes`` per round (see :meth:`relabel_set`), so a round costs the
        same after 50 keyframes as after 5000; the others keep their last pseudo-labels."""
        self._dcs_queue, self._dcs_next_views = self._round_items(mapper), []  # a whole round, now
        self._dcs_work(mapper, len(self._dcs_queue))

    def relabel_set(self, count: int) -> list[int]:
        """Indices of the keyframes one 3DCS round relabels out of ``count`` (:func:`relabel_indices`)."""
        take, self._dcs_cursor = relabel_indices(count, self.config.dcs_max_keyframes, self._dcs_cursor)
        return take

    @staticmethod
    def _annotated(mapper: IncrementalMapper) -> list[Keyframe]:
        """The held keyframes that have their masks (oldest first)."""
        return [kf for kf in mapper.keyframes if kf.annotation is not None and kf.annotation.masks is not None]
