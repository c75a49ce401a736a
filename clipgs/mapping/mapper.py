"""IncrementalMapper: posed RGB-D frames in, an optimised Gaussian map out (no ROS, no threads)."""
from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from clipgs.data.frame import Frame
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.frame_check import rejection_reason
from clipgs.mapping.gaussian_map import GaussianMap
from clipgs.mapping.growth import growth_mask
from clipgs.mapping.keyframes import KeyframeGate
from clipgs.mapping.losses import mapping_loss
from clipgs.mapping.optimizer import GaussianAdam
from clipgs.semantics.sac import SemanticDecoder, knn_consistency, knn_neighbours, sac_losses, sample_mask_pixels
from clipgs.semantics.self_training import label_rendered_view, novel_cameras, vote_in_masks
from clipgs.semantics.sources import MaskEmbeddings

log = logging.getLogger(__name__)


@dataclass
class MapperStats:
    """Counters a user (or the ROS node) can log. Times in seconds."""

    frames_received: int = 0
    keyframes: int = 0
    skipped_non_keyframes: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> count
    iterations: int = 0
    gaussians: int = 0
    added: int = 0
    pruned: int = 0
    last_loss: float = float("nan")
    last_parts: dict = field(default_factory=dict)
    optimise_seconds: float = 0.0
    pseudo_label_rounds: int = 0
    semantic_failures: Counter = field(default_factory=Counter)  # error -> keyframes mapped without semantics

    @property
    def seconds_per_iteration(self) -> float:
        return self.optimise_seconds / self.iterations if self.iterations else float("nan")


@dataclass
class Keyframe:
    """A keyframe's data as tensors ready for the loss (rgb (H, W, 3) in [0, 1], depth (H, W) metres).

    semantics: the 2D source's masks and embeddings for this view (when mapping semantics).
    """

    frame: Frame
    rgb: torch.Tensor
    depth: torch.Tensor
    semantics: MaskEmbeddings | None = None
    pseudo_labels: torch.Tensor | None = None  # (H, W) long vocabulary index, -1 = none (3DCS)


class IncrementalMapper:
    """Grows and optimises a Gaussian map from a stream of posed RGB-D frames.

    ``add_frame`` returns what happened to the frame: 'keyframe', 'skipped' (not a keyframe) or
    'rejected:<reason>'. Bad frames never raise; they are counted in ``stats.rejected``.
    Thread-safe: ``snapshot()`` may be called from another thread while ``add_frame`` runs.
    """

    def __init__(self, config: MapperConfig | None = None, device: str | torch.device = "cpu",
                 semantic_source: Callable[[Frame], MaskEmbeddings] | None = None,
                 vocabulary: torch.Tensor | None = None) -> None:
        """semantic_source: frame -> masks + embeddings (SAC supervision); vocabulary: (C, D) unit text
        embeddings of the label set 3DCS votes over (row 0 may be a void class: it is never chosen)."""
        self.config = config or MapperConfig()
        self.vocabulary = vocabulary
        self.semantic_source = semantic_source if self.config.sem_dim > 0 else None
        self.decoder: SemanticDecoder | None = None
        self.decoder_optimizer: torch.optim.Optimizer | None = None
        self._sem_generator = torch.Generator().manual_seed(self.config.seed)
        self.device = torch.device(device)
        self.stats = MapperStats()
        self.keyframes: list[Keyframe] = []
        self.novel_views: list[Keyframe] = []  # 3DCS views between keyframes: pseudo-labels only, no teacher
        self._knn: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # anchors, neighbours, valid
        self.gate = KeyframeGate(self.config.kf_translation_m, self.config.kf_rotation_deg,
                                 self.config.kf_min_overlap, seed=self.config.seed)
        self.rng = np.random.default_rng(self.config.seed)
        self.optimizer: GaussianAdam | None = None
        self._size: tuple[int, int] | None = None
        self._last_timestamp: float | None = None
        self._lock = threading.RLock()

    # ----------------------------------------------------------------- public API
    def add_frame(self, frame: Frame) -> str:
        c = self.config
        self.stats.frames_received += 1
        try:
            reason = rejection_reason(frame, self._size, self._last_timestamp, c.min_valid_depth_fraction)
            if reason is None:
                frame = dataclasses.replace(frame)  # re-validates and sanitises depth (NaN/inf/negative -> 0)
        except Exception as exc:  # a malformed frame must never take the mapper down
            reason = f"invalid_frame ({type(exc).__name__})"
        if reason is not None:
            self.stats.rejected[reason] += 1
            return f"rejected:{reason}"
        self._size, self._last_timestamp = (frame.width, frame.height), frame.timestamp
        if not self.gate.is_keyframe(frame):
            self.stats.skipped_non_keyframes += 1
            return "skipped"
        self.gate.accept(frame)
        self._add_keyframe(frame)
        self.optimise(c.iters_per_keyframe)
        self.prune()
        n = self.stats.keyframes
        if self.self_training_enabled and n >= c.dcs_start and (n - c.dcs_start) % c.dcs_every == 0:
            self.refresh_pseudo_labels()
        return "keyframe"

    @property
    def self_training_enabled(self) -> bool:
        return self.config.dcs_every > 0 and self.vocabulary is not None and self.decoder is not None

    @torch.no_grad()
    def refresh_pseudo_labels(self) -> None:
        """3DCS: render each keyframe's semantics, label by the vocabulary, vote inside its 2D masks; likewise
        for ``dcs_novel_views`` views between consecutive keyframes, segmented from their own renders."""
        c = self.config
        vocab = self.vocabulary.to(self.device)
        for kf in self.keyframes:
            if kf.semantics is None:
                continue
            with self._lock:
                out = self.optimizer.map.render(kf.frame.camera, semantic=True, backend=c.backend)
            kf.pseudo_labels = vote_in_masks(self.decoder.similarity(out.image[..., 3:], vocab) / c.dcs_tau,
                                             kf.semantics.mask_ids.to(self.device), c.dcs_confidence)
        self.novel_views = []
        for camera in novel_cameras([kf.frame.camera for kf in self.keyframes], c.dcs_novel_views):
            with self._lock:
                out = self.optimizer.map.render(camera, semantic=True, backend=c.backend)
            frame, pseudo = label_rendered_view(out, camera, self.decoder, vocab, c.dcs_confidence, c.dcs_tau)
            if bool((pseudo >= 0).any()):
                self.novel_views.append(Keyframe(frame, out.image[..., :3], out.depth, None, pseudo))
        self.stats.pseudo_label_rounds += 1

    def snapshot(self) -> GaussianMap:
        """A detached copy of the current map, consistent even while mapping continues in another thread."""
        with self._lock:
            if self.optimizer is None:
                return GaussianMap.empty(self.config.sem_dim, device=self.device)
            return self.optimizer.map.detach()

    def snapshot_decoder(self) -> SemanticDecoder | None:
        """A copy of the semantic decoder (None before the first keyframe with semantics), safe to use meanwhile."""
        with self._lock:
            return None if self.decoder is None else copy.deepcopy(self.decoder).eval()

    @property
    def gaussian_count(self) -> int:
        return 0 if self.optimizer is None else len(self.optimizer.map)

    # ----------------------------------------------------------------- steps
    def _add_keyframe(self, frame: Frame) -> None:
        c = self.config
        kf = Keyframe(
            frame=frame,
            rgb=torch.tensor(frame.rgb, device=self.device).float() / 255.0,
            depth=torch.tensor(frame.depth, device=self.device),
            semantics=self._observe_semantics(frame),
        )
        if kf.semantics is not None and self.decoder is None:
            with torch.random.fork_rng(devices=[]):  # seeded: the same config maps the same way in any process
                torch.manual_seed(c.seed)
                self.decoder = SemanticDecoder(c.sem_dim, kf.semantics.embeddings.shape[1], c.sem_hidden)
                self.decoder.to(self.device)
            params = list(self.decoder.parameters())
            self.decoder_optimizer = torch.optim.Adam(params, lr=c.lr_decoder) if params else None
        with self._lock:
            if self.optimizer is None:
                new = GaussianMap.from_frame(frame, sem_dim=c.sem_dim, pixel_stride=c.init_pixel_stride,
                                             initial_opacity=c.initial_opacity, device=self.device)
                self.optimizer = GaussianAdam(new, self._learning_rates())
            else:
                with torch.no_grad():
                    render = self.optimizer.map.render(frame.camera, semantic=False, backend=c.backend)
                mask = growth_mask(render, frame, c.grow_alpha, c.grow_depth_margin)
                new = GaussianMap.from_frame(frame, sem_dim=c.sem_dim, pixel_stride=c.grow_pixel_stride, mask=mask,
                                             initial_opacity=c.initial_opacity, device=self.device)
                if len(new):
                    self.optimizer.extend(new)
            self.stats.added += len(new)
            self.keyframes.append(kf)
            self.stats.keyframes += 1
            self.stats.gaussians = len(self.optimizer.map)

    def _observe_semantics(self, frame: Frame) -> MaskEmbeddings | None:
        """The 2D source's masks + embeddings; a failing source costs this keyframe its semantics, not its geometry."""
        if self.semantic_source is None:
            return None
        try:
            return self.semantic_source(frame)
        except Exception as exc:
            self.stats.semantic_failures[f"{type(exc).__name__}: {exc}"[:120]] += 1
            if sum(self.stats.semantic_failures.values()) == 1:
                log.exception("semantic source failed on frame %s; mapping geometry only for it", frame.index)
            return None

    def _window(self) -> list[Keyframe]:
        """The newest ``window_size`` keyframes plus ``random_keyframes`` random older ones."""
        c = self.config
        recent = self.keyframes[-c.window_size:]
        older = self.keyframes[: -c.window_size] if len(self.keyframes) > c.window_size else []
        if older and c.random_keyframes:
            picks = self.rng.choice(len(older), min(c.random_keyframes, len(older)), replace=False)
            recent = recent + [older[i] for i in picks]
        return recent

    def optimise(self, iterations: int) -> None:
        """Run ``iterations`` steps on the window: the newest keyframe first, then random window members."""
        window = self._window()
        t0 = time.perf_counter()
        self._sample_knn()
        for i in range(iterations):
            self._step(self.keyframes[-1] if i == 0 else window[self.rng.integers(len(window))])
        for _ in range(self.config.dcs_novel_steps if self.novel_views else 0):
            self._novel_view_step(self.novel_views[self.rng.integers(len(self.novel_views))])
        self.stats.optimise_seconds += time.perf_counter() - t0

    def refine(self, iterations: int) -> None:
        """Extra optimisation over all keyframes, then pruning (offline mapping's final pass)."""
        if not self.keyframes:
            return
        t0 = time.perf_counter()
        self._sample_knn()
        for _ in range(iterations):
            self._step(self.keyframes[self.rng.integers(len(self.keyframes))])
        self.stats.optimise_seconds += time.perf_counter() - t0
        self.prune()

    def _step(self, kf: Keyframe) -> None:
        c = self.config
        semantic = kf.semantics is not None and self.decoder is not None
        with self._lock:
            opt = self.optimizer
            opt.zero_grad()
            out = opt.map.render(kf.frame.camera, semantic=semantic, backend=c.backend)
            loss, parts = mapping_loss(out.image[..., :3], out.depth, kf.rgb, kf.depth, c.w_color, c.w_ssim,
                                       c.w_depth)
            if semantic:
                self.decoder.zero_grad()
                loss = loss + self._semantic_loss(out.image[..., 3:], kf.semantics, parts, kf.pseudo_labels)
            loss.backward()
            opt.step()
            if semantic and self.decoder_optimizer is not None:
                self.decoder_optimizer.step()
        self.stats.iterations += 1
        self.stats.last_loss, self.stats.last_parts = float(loss.detach()), parts

    def _novel_view_step(self, view: Keyframe) -> None:
        """3DCS on a view between keyframes: cross-entropy to its pseudo-labels; only semantics are updated
        (the view's colour and depth are the map's own render, no evidence for geometry)."""
        c = self.config
        with self._lock:
            opt = self.optimizer
            opt.zero_grad()
            self.decoder.zero_grad()
            out = opt.map.render(view.frame.camera, semantic=True, backend=c.backend)
            idx = sample_mask_pixels(view.pseudo_labels, c.sem_pixels, self._sem_generator)
            decoded = self.decoder(out.image[..., 3:].reshape(-1, c.sem_dim)[idx])
            logits = decoded @ self.vocabulary.to(decoded).T / c.sem_tau
            loss = c.w_dcs * F.cross_entropy(logits, view.pseudo_labels.reshape(-1)[idx])
            loss.backward()
            for name, p in opt.params.items():
                if name != "semantics":
                    p.grad = None
            opt.step()
            if self.decoder_optimizer is not None:
                self.decoder_optimizer.step()

    def _sample_knn(self) -> None:
        """Anchors and their neighbours for the 3D term, drawn once per optimisation round (positions move little)."""
        c = self.config
        self._knn = None
        if c.w_sem_knn <= 0 or self.decoder is None or self.optimizer is None or len(self.optimizer.map) < 2:
            return
        with torch.no_grad():
            means = self.optimizer.params["means"].detach()
            anchors = torch.randperm(len(means), generator=self._sem_generator)[:c.sem_knn_anchors].to(self.device)
            neighbours, valid = knn_neighbours(means, anchors, c.sem_knn_k, c.sem_knn_radius_m)
        self._knn = anchors, neighbours, valid

    def _semantic_loss(self, attributes: torch.Tensor, sem: MaskEmbeddings, parts: dict,
                       pseudo: torch.Tensor | None = None) -> torch.Tensor:
        """SAC (+ 3DCS) losses on sampled mask pixels; attributes (H, W, d) rendered with RGB in one pass."""
        c = self.config
        idx = sample_mask_pixels(sem.mask_ids, c.sem_pixels, self._sem_generator)
        if len(idx) == 0:
            return attributes.sum() * 0.0
        decoded = self.decoder(attributes.reshape(-1, attributes.shape[-1])[idx])
        terms = sac_losses(decoded, sem.mask_ids.reshape(-1)[idx], sem.embeddings.to(decoded), c.sem_tau)
        loss = c.w_sem * terms["cosine"] + c.w_sem_contrast * terms["contrast"] + c.w_sem_var * terms["variance"]
        if pseudo is not None and self.vocabulary is not None:
            target = pseudo.reshape(-1)[idx]
            keep = target >= 0
            if bool(keep.any()):
                logits = decoded[keep] @ self.vocabulary.to(decoded).T / c.sem_tau
                terms["dcs"] = F.cross_entropy(logits, target[keep])
                loss = loss + c.w_dcs * terms["dcs"]
        if self._knn is not None:
            anchors, neighbours, valid = self._knn
            per_gaussian = self.optimizer.params["semantics"]
            terms["knn"] = knn_consistency(self.decoder(per_gaussian[anchors]), self.decoder(per_gaussian[neighbours]),
                                           valid)
            loss = loss + c.w_sem_knn * terms["knn"]
        parts.update({f"sem_{k}": float(v.detach()) for k, v in terms.items()})
        return loss

    def prune(self) -> None:
        """Remove near-transparent and oversized Gaussians, then enforce the hard cap."""
        c = self.config
        with self._lock:
            opt = self.optimizer
            if opt is None:
                return
            gmap = opt.map
            with torch.no_grad():
                too_big = gmap.log_scales.max(dim=1).values.exp() > c.prune_max_scale_m
                remove = (gmap.opacities < c.prune_opacity) | too_big
            before = len(gmap)
            if bool(remove.any()):
                opt.keep(~remove)
            _, kept = opt.map.cap(c.max_gaussians)
            if len(kept) < len(opt.map):
                opt.keep(kept)
            self.stats.pruned += before - len(opt.map)
            self.stats.gaussians = len(opt.map)

    def _learning_rates(self) -> dict[str, float]:
        c = self.config
        return {"means": c.lr_means, "quats": c.lr_quats, "log_scales": c.lr_log_scales,
                "opacity_logits": c.lr_opacity_logits, "sh0": c.lr_sh0, "semantics": c.lr_semantics}
