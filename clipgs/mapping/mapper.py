"""IncrementalMapper: posed RGB-D frames in, an optimised Gaussian map out (no ROS, no threads).

The mapping loop only: gate -> grow -> optimise over a keyframe window -> prune. Extra per-Gaussian
channels (semantics) are trained by a :class:`ChannelTrainer` the mapper calls at a few points.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import threading
from collections.abc import Callable, Collection

import numpy as np
import torch
from torch import Tensor

from clipgs.data.frame import Camera, Frame
from clipgs.errors import SettingsError
from clipgs.mapping.channel_trainer import ChannelTrainer
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.frame_check import PoseJumpGate, rejection_reason
from clipgs.mapping.gaussian_map import GaussianMap
from clipgs.mapping.growth import auto_pixel_stride, growth_mask
from clipgs.mapping.keyframes import Keyframe, KeyframeGate, KeyframeStore
from clipgs.mapping.losses import mapping_loss
from clipgs.mapping.state import MapperStats, MapSnapshot, timed_phase
from clipgs.mapping.tracker import PoseTracker
from clipgs.mapping.trainable_map import TrainableMap
from clipgs.render import Occluder, RenderOutput

LossFn = Callable[[RenderOutput], tuple[Tensor, dict[str, float]]]
PRUNE_BATCH = 0.01  # transparent Gaussians are removed once they are this share of the map
log = logging.getLogger(__name__)


class IncrementalMapper:
    """Grows and optimises a Gaussian map from a stream of posed RGB-D frames.

    ``add_frame`` returns what happened to the frame: 'keyframe', 'skipped' (not a keyframe) or
    'rejected:<reason>'. Bad frames never raise; they are counted in ``stats.rejected``. It is ``prepare`` (checks,
    mapping resolution, pose tracking) then ``integrate`` (the mapping); a worker may run the two on different
    threads, each in frame order. Thread-safe: ``snapshot()`` may be called from another thread meanwhile.
    """

    def __init__(self, config: MapperConfig | None = None, device: str | torch.device = "cpu",
                 trainer: ChannelTrainer | None = None) -> None:
        """trainer: trains extra per-Gaussian channels (e.g. a ``SemanticTrainer``); None: geometry only."""
        self.config = config or MapperConfig()
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise SettingsError(f"device {str(device)!r} asked for, but this PyTorch ({torch.__version__}) sees no "
                                "CUDA GPU; use device: cpu")
        self.trainer = trainer or ChannelTrainer()
        self.stats = MapperStats()
        c = self.config
        self.keyframes = KeyframeStore(int(c.keyframe_budget_mb * 2**20), protect=c.window_size)
        self.gate = KeyframeGate(c.kf_translation_m, c.kf_rotation_deg, c.kf_min_overlap, seed=c.seed)
        lrs = {"means": c.lr_means, "quats": c.lr_quats, "log_scales": c.lr_log_scales,
               "opacity_logits": c.lr_opacity_logits, "sh0": c.lr_sh0, "semantics": self.trainer.channel_lr}
        self.map = TrainableMap(GaussianMap.empty(self.trainer.channels, device=self.device), lrs)
        self.rng, self.jumps = np.random.default_rng(c.seed), PoseJumpGate(c.max_speed_mps)
        self._size: tuple[int, int] | None = None
        self.last_input_camera: Camera | None = None  # of the last frame that passed the checks, as given
        self._last_timestamp: float | None = None
        self.tracker = PoseTracker(self.config, self.stats)
        self._lock = threading.RLock()
        self._stats_lock = threading.Lock()  # prepare (one thread) and counters (any) meet here
        self.trainer.attach(self)

    # ----------------------------------------------------------------- public API
    def add_frame(self, frame: Frame) -> str:
        """``prepare`` then ``integrate``: 'keyframe', 'skipped' or 'rejected:<reason>'."""
        prepared = self.prepare(frame)
        return prepared if isinstance(prepared, str) else self.integrate(prepared)

    def prepare(self, frame: Frame) -> Frame | str:
        """Check a frame, bring it to the mapping resolution and put its pose in the map frame (pose tracking);
        cheap, so a worker can run it on every frame while ``integrate`` maps the newest. Returns the frame or
        'rejected:<reason>'."""
        c = self.config
        self.stats.frames_received += 1
        try:
            reason = rejection_reason(frame, self._size, self._last_timestamp, c.min_valid_depth_fraction,
                                      c.clock_reset_s)
            if reason is None and not self.jumps.accept(frame.world_from_camera[:3, 3], frame.timestamp):
                reason = "pose_jump"
            if reason is None:
                self.last_input_camera, size = frame.camera, (frame.width, frame.height)
                frame = dataclasses.replace(frame)  # re-validates and sanitises depth (NaN/inf/negative -> 0)
                width = c.map_width or c.auto_map_width(frame.width, self.device.type, self.trainer.channels > 0)
                frame = frame.resized(width) if width else frame
                frame = self.tracker.track(frame) if self.tracker.enabled else frame
        except Exception as exc:  # a malformed frame must never take the mapper down
            reason = f"invalid_frame ({type(exc).__name__})"
        with self._stats_lock:
            self.stats.relocalisations = self.jumps.relocalisations
            if reason is not None:
                self.stats.rejected[reason] += 1
                return f"rejected:{reason}"
            if self._last_timestamp is not None and frame.timestamp < self._last_timestamp:
                self.stats.clock_resets += 1
                log.warning("timestamp went back %.1f s: clock reset (bag loop, sim time, a stamp far ahead "
                            "before); mapping goes on", self._last_timestamp - frame.timestamp)
        self._size, self._last_timestamp = size, frame.timestamp  # the camera's size, not the mapping size
        return frame

    def integrate(self, frame: Frame) -> str:
        """Map a prepared frame: 'keyframe' (refined, grown, optimised, pruned) or 'skipped' (not a keyframe)."""
        c = self.config
        if not self.gate.is_keyframe(frame):
            self.stats.skipped_non_keyframes += 1
            return "skipped"
        if c.pose_refine_iters > 0 and len(self.map):
            frame = self.tracker.refine_keyframe(frame, self.keyframes, self.map.gaussians)
        self.gate.accept(frame)
        self._add_keyframe(frame)
        self.optimise(c.iters_per_keyframe)
        self.prune()
        with self.stats.timed("keyframe_work"):
            self.trainer.after_keyframe(self)
        return "keyframe"

    def snapshot(self) -> MapSnapshot:
        """The map, the trainer's decoder and the counters of one instant, consistent while mapping goes on."""
        with self._lock:
            return MapSnapshot(self.map.snapshot(), self.trainer.snapshot(), *self.counters())

    def counters(self) -> tuple[MapperStats, dict]:
        """Copies of the mapper's and the trainer's counters (cheap: no map copy), e.g. for a log line."""
        with self._lock, self._stats_lock:
            return copy.deepcopy(self.stats), self.trainer.counters()

    gaussian_count = property(lambda self: len(self.map), doc="Gaussians in the map now")
    lock = property(lambda self: self._lock, doc="reentrant; held by each step, render, snapshot and finish")

    # ----------------------------------------------------------------- what a channel trainer calls
    def render(self, camera: Camera, channels: bool = True) -> RenderOutput:
        """The current map from ``camera`` (no gradients), with or without the extra channels."""
        with self._lock, torch.no_grad():
            return self.map.gaussians.render(camera, semantic=channels, backend=self.config.backend)

    def train_step(self, camera: Camera, loss_fn: LossFn, channels: bool, only: Collection[str] | None = None,
                   pixels: Tensor | None = None, occluder: Occluder | None = None) -> tuple[Tensor, dict[str, float]]:
        """One step: render ``camera`` (channels wanted at ``pixels``, None: all), ``loss_fn(render)``, backward, step
        the map (``only``: these fields; ``view_steps``: Gaussians in view, less what ``occluder`` hides), trainer."""
        with self._lock:
            view = self.config.view_steps and not self.trainer.needs_whole_map
            work, rows = self.map.working_set(camera if view else None, self.config.backend, occluder, only)
            self.map.zero_grad()
            self.trainer.zero_grad()  # its optimiser steps only after a step that rendered the channels
            out = work.render(camera, semantic=channels, backend=self.config.backend, attribute_pixels=pixels,
                              cull=not view, attributes_move_geometry=self.trainer.channels_move_geometry)
            loss, parts = loss_fn(out)
            loss.backward()
            self.map.step(only, rows, work, out.visible if view else None)
            if channels:
                self.trainer.step()
        return loss, parts

    # ----------------------------------------------------------------- steps
    @timed_phase("growth")
    def _add_keyframe(self, frame: Frame) -> None:
        c = self.config
        kf = Keyframe.from_frame(frame, self.device, self.trainer.observe(frame))
        empty = len(self.map) == 0
        mask = None if empty else growth_mask(self.render(frame.camera, channels=False), frame, c.grow_alpha,
                                              c.grow_depth_margin)
        stride = (c.init_pixel_stride if empty else c.grow_pixel_stride) or auto_pixel_stride(frame.width, frame.height)
        if empty:  # seed about as many as the Gaussian budget holds (a 12 MP frame must not make 12 M first)
            stride = max(stride, math.floor(math.sqrt(frame.width * frame.height / c.max_gaussians)))
        new = GaussianMap.from_frame(frame, sem_dim=self.trainer.channels, mask=mask, pixel_stride=stride,
                                     initial_opacity=c.initial_opacity, device=self.device)
        room = max(c.max_gaussians - len(self.map), 0)
        if len(new) > room:  # the budget holds when Gaussians are added, not only at pruning
            keep = np.sort(self.rng.choice(len(new), room, replace=False))
            new = new.select(torch.from_numpy(keep).to(self.device))
        with self._lock:
            if len(new):
                self.map.extend(new)
            self.keyframes.append(kf)
            s, store = self.stats, self.keyframes
            s.added, s.keyframes, s.gaussians = s.added + len(new), s.keyframes + 1, len(self.map)
            s.keyframes_held, s.keyframes_evicted, s.keyframe_bytes = len(store), store.evicted, store.nbytes

    def _window(self) -> list[Keyframe]:
        """The newest ``window_size`` keyframes plus ``random_keyframes`` random older ones."""
        c = self.config
        n_old, k = max(len(self.keyframes) - c.window_size, 0), c.random_keyframes
        picks = self.rng.choice(n_old, min(k, n_old), replace=False) if n_old and k else []
        return self.keyframes[-c.window_size:] + [self.keyframes[int(i)] for i in picks]

    def optimise(self, iterations: int) -> None:
        """Run ``iterations`` steps on the window: the newest keyframe first, then random window members."""
        window = self._window()
        with self.stats.timed("rounds"):
            self.trainer.begin_round(self)
        for i in range(iterations):
            self._keyframe_step(self.keyframes[-1] if i == 0 else window[self.rng.integers(len(window))])
        with self.stats.timed("rounds"):
            self.trainer.end_round(self)

    def finish(self, iterations: int = 0, progress: Callable[[int, int], None] | None = None,
               stop: Callable[[], bool] | None = None) -> None:
        """Stream ended: ``iterations`` steps over all keyframes, prune, the trainer's ``finish`` (until ``stop()``)."""
        with self._lock:
            self.trainer.begin_round(self)
            for _ in range(iterations if self.keyframes else 0):
                self._keyframe_step(self.keyframes[self.rng.integers(len(self.keyframes))])
            self.prune(batch=0.0)
            self.trainer.finish(self, progress, stop)

    @timed_phase("steps")
    def _keyframe_step(self, kf: Keyframe) -> None:
        c = self.config
        channels = self.trainer.renders_channels(kf)

        def loss_fn(out: RenderOutput) -> tuple[Tensor, dict[str, float]]:
            loss, parts = mapping_loss(out.rgb, out.depth, kf.rgb, kf.depth, c.w_color, c.w_ssim, c.w_depth,
                                       kf.near_depth(c.color_radius_px) if c.color_radius_px >= 0 else None)
            extra = self.trainer.keyframe_loss(out, kf, self.map.gaussians, parts) if channels else None
            return (loss if extra is None else loss + extra), parts

        loss, parts = self.train_step(kf.camera, loss_fn, channels, pixels=self.trainer.channel_pixels(kf),
                                      occluder=kf.occluder(c.occlusion_margin_m))  # what its surface hides
        self.stats.iterations += 1
        self.stats.last_loss, self.stats.last_parts = float(loss.detach()), parts

    @timed_phase("prune")
    def prune(self, batch: float = PRUNE_BATCH) -> None:
        """Remove oversized Gaussians, near-transparent ones once they are ``batch`` of the map (removing copies the
        whole map and its optimiser state; invisible Gaussians may wait), then enforce the hard cap."""
        c = self.config
        with self._lock:
            g = self.map.gaussians
            with torch.no_grad():
                remove = g.log_scales.max(dim=1).values.exp() > c.prune_max_scale_m
                transparent = g.opacities < c.prune_opacity
                if int(transparent.sum()) >= batch * len(g):
                    remove |= transparent
            before = len(g)
            if bool(remove.any()):
                self.map.select(~remove)
            kept = self.map.gaussians.strongest(c.max_gaussians)
            if len(kept) < len(self.map):
                self.map.select(kept)
            self.stats.pruned += before - len(self.map)
            self.stats.gaussians = len(self.map)
