"""SemanticTrainer: trains the map's semantic attributes beside the mapper (SAC, 3DCS, the 3D term).

It owns the decoder and its optimiser, the 2D source's observations per keyframe, the SAC loss, 3DCS
scheduling with its pseudo-labels and novel views (the rounds themselves: :mod:`clipgs.semantics.dcs_rounds`),
and the KNN term. The mapper calls it through the :class:`~clipgs.mapping.ChannelTrainer` hooks and never
imports it.
"""
from __future__ import annotations

import copy
import functools
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from clipgs.data.frame import Camera, Frame
from clipgs.mapping import ChannelTrainer, GaussianMap, IncrementalMapper
from clipgs.mapping.keyframes import Keyframe
from clipgs.render import RenderOutput
from clipgs.semantics import fusion
from clipgs.semantics.config import SemanticTrainingConfig
from clipgs.semantics.dcs_rounds import CoherentRounds
from clipgs.semantics.refit import RefitReport, refit_decoder
from clipgs.semantics.sac import (
    DecodedPixels,
    SamplerCache,
    SemanticDecoder,
    knn_consistency,
    knn_neighbours,
    sac_losses,
    weighted_sac,
)
from clipgs.semantics.source_worker import SourceWorker, deliver_masks, run_source
from clipgs.semantics.sources import MaskEmbeddings
from clipgs.semantics.supervision import KeyframeSemantics, NovelView, compact_ids, label_cross_entropy, replay_loss


class SemanticTrainer(CoherentRounds, ChannelTrainer):
    """source: frame -> masks + embeddings (SAC supervision); vocabulary: (C, D) unit text embeddings of the
    label set 3DCS votes over (row 0 may be a void class: it is never chosen); None switches 3DCS off."""

    def __init__(self, config: SemanticTrainingConfig, source: Callable[[Frame], MaskEmbeddings],
                 vocabulary: Tensor | None = None) -> None:
        self.config, self.source, self.vocabulary = config, source, vocabulary
        self.channels, self.channel_lr = config.sem_dim, config.lr_semantics
        self.channels_move_geometry = config.sem_moves_geometry
        self.decoder: SemanticDecoder | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.novel_views: list[NovelView] = []
        self.pseudo_label_rounds, self.dcs_rounds_waited = 0, 0  # rounds run; due ones that waited (dcs_yield)
        self._dcs_cursor = 0  # next older keyframe a bounded 3DCS round relabels
        self._dcs_queue: list[tuple[Keyframe, Camera | None]] | None = None  # an open round: what is left to do
        self._dcs_next_views: list[NovelView] = []  # the novel views a spread round has labelled so far
        self._dcs_per_keyframe, self._dcs_owed = 1, False  # owed: a round fell due, the stream ahead (dcs_yield)
        self.failures: Counter = Counter()  # error -> keyframes mapped without semantics
        self.device, self.seed = torch.device("cpu"), 0
        self._generator = torch.Generator().manual_seed(0)
        self._knn: tuple[Tensor, Tensor, Tensor] | None = None  # anchors, neighbours, valid
        self._vote_cursor = 0  # next older keyframe to vote again
        self.fusion_votes = 0  # keyframe views splatted onto the Gaussians so far
        self.worker: SourceWorker | None = None  # the source's thread, with async_source
        self._replay_pool: list[KeyframeSemantics] = []  # the annotated keyframes' supervision, drawn per round
        self.refit: RefitReport | None = None  # what the decoder refit did (``finish``)
        self._support: fusion.SupportChannels | None = None  # what 3DCS' support test renders (_vote, support=True)
        self._samplers = SamplerCache()  # the mask pixels of the keyframes and views steps sample from

    def attach(self, mapper: IncrementalMapper) -> None:
        self.device, self.seed = mapper.device, mapper.config.seed
        self._generator = torch.Generator().manual_seed(self.seed)

    fusion_enabled = property(lambda self: self.config.w_fused > 0 and self.vocabulary is not None)
    self_training_enabled = property(lambda self: self.config.dcs_every > 0 and self.vocabulary is not None
                                     and self.decoder is not None, doc="3DCS on (dcs_every, a vocabulary, a decoder)")

    # ----------------------------------------------------------------- hooks
    def observe(self, frame: Frame) -> KeyframeSemantics | None:
        """The 2D source's masks + embeddings; a failing source costs this keyframe its semantics, not its
        geometry. With ``async_source`` the keyframe joins at once and its masks arrive when the source's
        thread is done (the worker's newest-wins queue; see :mod:`clipgs.semantics.source_worker`)."""
        run = functools.partial(run_source, self.source, failures=self.failures)
        if self.config.async_source:
            if self.worker is None:
                self.worker = SourceWorker(run, deliver_masks)
            pending = KeyframeSemantics(None)
            self.worker.submit(frame, pending)
            return pending
        masks = run(frame)
        return None if masks is None else KeyframeSemantics(masks)

    @property
    def needs_whole_map(self) -> bool:
        return self._knn is not None  # the 3D term's anchors index the whole map

    def renders_channels(self, keyframe: Keyframe) -> bool:
        sem = keyframe.annotation
        if sem is None or sem.masks is None:
            return False
        if self.decoder is None:  # built on the mapping thread, at the first keyframe with masks
            self._build_decoder(sem.masks.embeddings.shape[1])
        return True

    def channel_pixels(self, keyframe: Keyframe) -> Tensor | None:
        """The mask pixels the coming ``keyframe_loss`` samples, drawn before the render (which then composites
        the attribute channels only around them)."""
        c = self.config
        return self._samplers.draw(keyframe.annotation.masks.mask_ids, c.sem_pixels, self._generator,
                                   c.sem_mask_balance) if self.renders_channels(keyframe) else None

    def close(self) -> None:
        """Stop the source's thread (async_source); a no-op otherwise."""
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def begin_round(self, mapper: IncrementalMapper) -> None:
        """Anchors and neighbours for the 3D term, drawn once per round (positions move little)."""
        c, means = self.config, mapper.map.gaussians.means
        self._replay_pool = [kf.annotation for kf in self._annotated(mapper)]
        self._knn = None
        if c.w_sem_knn <= 0 or self.decoder is None or len(means) < 2:
            return
        with torch.no_grad():
            anchors = torch.randperm(len(means), generator=self._generator)[:c.sem_knn_anchors].to(self.device)
            neighbours, valid = knn_neighbours(means.detach(), anchors, c.sem_knn_k, c.sem_knn_radius_m)
        self._knn = anchors, neighbours, valid

    def keyframe_loss(self, out: RenderOutput, keyframe: Keyframe, gaussians: GaussianMap,
                      parts: dict[str, float]) -> Tensor:
        """SAC (+ 3DCS pseudo-labels, + the 3D term) on sampled mask pixels of the rendered attributes."""
        c, sem = self.config, keyframe.annotation
        idx = out.attribute_pixels if out.attribute_pixels is not None else self.channel_pixels(keyframe)
        if len(idx) == 0:
            return out.semantics.sum() * 0.0
        rows = out.semantics.reshape(-1, c.sem_dim).index_select(0, idx.to(out.image.device))
        label_terms = (("dcs", sem.pseudo_labels, c.w_dcs, self.vocabulary is not None),
                       ("fused", sem.fused_labels, c.w_fused, self.fusion_enabled))
        labelled = any(on and labels is not None for _, labels, _, on in label_terms)
        decoded = DecodedPixels(self.decoder, rows, label_share=c.dcs_decoder_share if labelled else None)
        ids = sem.masks.mask_ids.reshape(-1)[idx].to(out.image.device).long()  # masks stay where the source made them
        terms = sac_losses(decoded, ids, sem.masks.embeddings.to(out.image), c.sem_tau)
        loss = weighted_sac(terms, self.config)
        if c.sem_replay_pixels > 0:
            replay = replay_loss(self.decoder, self._replay_pool, sem, c, self._generator, decoded.gram)
            keep = torch.linspace(0, len(idx) - 1, min(len(idx), c.sem_replay_pixels), device=ids.device).long()
            sem.replay = rows.detach()[keep], compact_ids(ids[keep])  # indexing copies: nothing of the step kept
            if replay is not None:
                terms["replay"] = replay
                loss = loss + c.w_sem_replay * replay
        logits = None  # the vocabulary logits, computed once for both label terms
        for name, labels, weight, on in label_terms:
            if not on or labels is None:
                continue
            logits = self._label_logits(decoded, rows) if logits is None else logits
            term = label_cross_entropy(logits, labels, idx)
            if term is not None:
                terms[name] = term
                loss = loss + weight * term
        if self._knn is not None:
            anchors, neighbours, valid = self._knn
            attrs = gaussians.semantics
            terms["knn"] = knn_consistency(self.decoder.pair_cosine(attrs[anchors], attrs[neighbours]), valid)
            loss = loss + c.w_sem_knn * terms["knn"]
        parts.update({f"sem_{k}": float(v.detach()) for k, v in terms.items()})
        return loss

    def zero_grad(self) -> None:
        if self.decoder is not None:
            self.decoder.zero_grad()

    def step(self) -> None:
        if self.optimizer is not None:
            self.optimizer.step()

    def end_round(self, mapper: IncrementalMapper) -> None:
        """3DCS on views between keyframes: cross-entropy to their pseudo-labels, semantics updated only."""
        c = self.config
        waiting = c.dcs_yield and self.stream_behind()  # frames are waiting: mapping them comes first
        for _ in range(c.dcs_novel_steps if self.novel_views and not waiting else 0):
            view = self.novel_views[mapper.rng.integers(len(self.novel_views))]
            idx = self._samplers.draw(view.pseudo_labels, c.sem_pixels, self._generator, c.sem_mask_balance)

            def loss_fn(out: RenderOutput, view: NovelView = view) -> tuple[Tensor, dict[str, float]]:
                idx = out.attribute_pixels
                rows = out.semantics.reshape(-1, c.sem_dim).index_select(0, idx.to(out.image.device))
                term = label_cross_entropy(self._label_logits(None, rows), view.pseudo_labels, idx)
                loss = c.w_dcs * term if term is not None else rows.sum() * 0.0  # idx: labelled pixels only
                return loss, {"novel_dcs": float(loss.detach())}

            mapper.train_step(view.camera, loss_fn, channels=True, only={"semantics"}, pixels=idx,
                              occluder=view.occluder(mapper.config.occlusion_margin_m))

    def after_keyframe(self, mapper: IncrementalMapper) -> None:
        if self.config.dcs_mature_keyframes > 0:
            mapper.map.extra("age_keyframes", 1).add_(1)  # new Gaussians start at 0
        self._vote(mapper)
        c, n = self.config, mapper.stats.keyframes - self.config.dcs_start  # keyframes past the warm-up
        due = self.self_training_enabled and n >= 0 and (n % c.dcs_every == 0 or self._dcs_owed)
        if c.dcs_yield and self.stream_behind():  # a live stream ahead of the mapper: new views first
            self._dcs_owed, self.dcs_rounds_waited = self._dcs_owed or due, self.dcs_rounds_waited + due
            return
        self._dcs_owed = False
        if not c.dcs_spread:
            if due:
                self.refresh_pseudo_labels(mapper)
            return
        if due:  # a new round: any unfinished one is finished first (it is due after dcs_every keyframes)
            self._dcs_work(mapper, len(self._dcs_queue or ()))
            self._dcs_queue = self._round_items(mapper)[::-1]  # newest first: they are the ones still trained on
            self._dcs_per_keyframe = -(-len(self._dcs_queue) // c.dcs_every)  # ceil: done before the next round
        self._dcs_work(mapper, self._dcs_per_keyframe)

    def finish(self, mapper: IncrementalMapper, progress: Callable[[int, int], None] | None = None,
               stop: Callable[[], bool] | None = None, ended: bool = True) -> None:
        """A last 3DCS round if the stream has ended (:meth:`final_round`), then the decoder refit (``refit_steps``:
        the decoder alone fitted to every held keyframe, clipgs.semantics.refit; none with ``sem_hidden: 0``).
        ``progress(done, total)`` counts the steps of both against one total."""
        c = self.config
        final = ended and self.self_training_enabled and c.dcs_final_keyframes > 0 and not (stop and stop())
        refit = c.refit_steps > 0 and self.decoder is not None and self.optimizer is not None
        after = c.refit_steps if refit else 0  # the refit's steps, counted after the round's
        first = self.final_round(mapper, stop, progress and (lambda done, n: progress(done, n + after))) if final else 0
        if refit:
            self.refit = refit_decoder(self.decoder, self.optimizer, self._annotated(mapper), mapper.map.gaussians,
                                       c, self.vocabulary, self._generator, mapper.config.backend,
                                       progress and (lambda done, n: progress(first + done, first + n)), mapper.lock,
                                       stop)

    def snapshot(self) -> SemanticDecoder | None:
        return None if self.decoder is None else copy.deepcopy(self.decoder).eval()

    def counters(self) -> dict[str, Any]:
        counters = {"pseudo_label_rounds": self.pseudo_label_rounds, "dcs_rounds_waited": self.dcs_rounds_waited,
                    "semantic_failures": Counter(self.failures), "fusion_votes": self.fusion_votes,
                    "decoder_refit": self.refit}
        if self.worker is not None:
            counters.update(semantic_lag_s=self.worker.last_lag_s, semantics_skipped=self.worker.skipped,
                            semantics_pending=self.worker.pending)
        return counters

    # ----------------------------------------------------------------- 3D label fusion
    @torch.no_grad()
    def _vote(self, mapper: IncrementalMapper, support: bool = False) -> None:
        """New and ``fused_revote`` older keyframes (:func:`~fusion.keyframes_to_vote`) splat their masks' classes onto
        the Gaussians; with fusion each then gets the fused classes rendered into its view as pixel targets.
        ``support``: for 3DCS' support test when it is on, as a round's work starts (each keyframe once, hard:
        ``dcs_tau``; at most max(dcs_final, dcs_max_keyframes) new ones), so a stream whose rounds wait does not pay
        for it meanwhile; then the channels the round's views render for it (``fusion.support_channels``)."""
        c, fused, cursor = self.config, self.fusion_enabled, self._vote_cursor
        limit, on = max(c.dcs_final_keyframes, c.dcs_max_keyframes), fused or (support and c.dcs_teacher_support > 0)
        todo, self._vote_cursor = fusion.keyframes_to_vote(self._annotated(mapper), c.fused_revote if fused else 0,
                                                           cursor, limit) if on else ([], cursor)
        votes = mapper.map.extra("class_votes", len(self.vocabulary)) if on else None
        if todo:
            fusion.vote_and_label(todo, votes, mapper.map.gaussians, self.vocabulary.to(self.device),
                                  c.fused_tau if fused else c.dcs_tau, c.dcs_confidence, mapper.config.backend,
                                  label=fused)
        self.fusion_votes += len(todo)
        if support and c.dcs_teacher_support > 0:
            self._support = fusion.support_channels(votes, c.dcs_teacher_support)

    # ----------------------------------------------------------------- helpers
    def _label_logits(self, decoded: DecodedPixels | None, rows: Tensor) -> Tensor:
        """(P, C) vocabulary logits of rendered attribute rows (P, d) for the label terms, their gradient reaching
        the decoder scaled by ``dcs_decoder_share`` (the attributes get all of it): the label view of ``decoded``
        (made with that ``label_share``; None: decoded here)."""
        if decoded is None or decoded.label is None:
            decoded = DecodedPixels(self.decoder, rows, label_share=self.config.dcs_decoder_share)
        return self._logits(decoded.label)

    def _logits(self, decoded: DecodedPixels) -> Tensor:
        return decoded.cosines(self.vocabulary) / self.config.sem_tau

    def _build_decoder(self, embed_dim: int) -> None:
        c = self.config
        with torch.random.fork_rng(devices=[]):  # seeded: the same settings map the same way in any process
            torch.manual_seed(self.seed)
            self.decoder = SemanticDecoder(c.sem_dim, embed_dim, c.sem_hidden).to(self.device)
        params = list(self.decoder.parameters())
        self.optimizer = torch.optim.Adam(params, lr=c.lr_decoder) if params else None
