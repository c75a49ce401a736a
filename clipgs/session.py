"""MappingSession: everything the ROS node does, without ROS (the node only wires topics to these calls).

Inputs arrive as ROS-shaped messages (any objects with ROS field names) plus poses as 4x4 matrices;
outputs are numpy arrays and plain results the node turns into messages.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipgs.data.frame import Camera
from clipgs.data.images import colorize_labels, to_uint8
from clipgs.data.ros_messages import matrix_from_transform, stamp_to_seconds
from clipgs.data.ros_stream import ApproxTimePairer, FrameAssembler, PoseWait, TransformBuffer, WaitingPair
from clipgs.errors import FrameError, MessageError
from clipgs.mapping import IncrementalMapper, save_ply
from clipgs.mapping.state import describe_phases
from clipgs.mapping.trajectory import TrajectoryPose, save_trajectory, trajectory_path
from clipgs.mapping.worker import MapperWorker
from clipgs.openmp import hands_back_team
from clipgs.parameters import Parameters
from clipgs.semantics.factory import SemanticStack, build_semantics
from clipgs.semantics.instances import QueryInstance, describe_instances
from clipgs.semantics.model import save_semantics
from clipgs.semantics.pipeline import labels_from_render
from clipgs.semantics.query import negative_names, query_map

log = logging.getLogger(__name__)
POSE_TOPIC_FRAME = "__pose_topic__"


@dataclass
class QueryResult:
    success: bool
    message: str
    mask: np.ndarray | None = None  # (H, W) uint8, 255 = match
    relevancy: np.ndarray | None = None  # (H, W) float32 in [0, 1]
    score: float = 0.0
    centroid: np.ndarray | None = None  # (3,) map frame, the strongest matching object
    box_min: np.ndarray | None = None
    box_max: np.ndarray | None = None
    instances: list[QueryInstance] = field(default_factory=list)  # every matching object, strongest first


@dataclass
class RenderedViews:
    """The map seen from a camera: rgb (H, W, 3) uint8, depth (H, W) float32 m (0 = empty),
    semantic (H, W, 3) uint8 vocabulary colours and labels (H, W) uint16 vocabulary indices (0 = void or empty),
    both None when semantics are off or not trained yet."""

    rgb: np.ndarray
    depth: np.ndarray
    semantic: np.ndarray | None = None
    labels: np.ndarray | None = None


@dataclass
class SessionCounters:
    color_depth_pairs: int = 0
    submitted: int = 0
    no_pose: int = 0
    bad_messages: dict = field(default_factory=dict)
    waited_for_pose: int = 0  # pairs mapped after waiting for a late pose


class MappingSession:
    """The node's brain: frames in (drop-when-busy), renders / cloud / map file / queries out."""

    def __init__(self, params: Parameters | None = None, semantics: SemanticStack | None = None) -> None:
        """params: every group of settings; the 2D source is built from ``params.semantics`` unless an already
        built ``semantics`` stack is given. Source 'none': geometry only. A source that cannot be built
        (missing weights) leaves semantics off; ``semantics_status`` says why and queries repeat it."""
        params = params or Parameters()
        self.params, self.stream, self.settings = params, params.stream, params.node
        self.semantics = semantics or SemanticStack()
        self.semantics_status = "semantics off (semantic_source: none)"
        if semantics is None and params.semantics.semantic_source != "none":
            try:
                self.semantics = build_semantics(params.semantics, device=params.node.device)
            except (ValueError, FileNotFoundError) as exc:
                self.semantics_status = f"semantics off: {exc}"
        if self.semantics.source is not None:
            self.semantics_status = f"semantics on: {self.semantics.description}, d={params.training.sem_dim}, " \
                                    f"{len(self.semantics.classes) - 1} classes"
        # A live stream never waits for CLIP / SAM: the 2D source always runs on its own thread here.
        training = params.training.replace(async_source=True)
        self.worker = MapperWorker(IncrementalMapper(params.mapper.resolved(params.stream.poses_from_odometry),
                                                     params.node.device, self.semantics.trainer(training)),
                                   params.node.idle_refit_s)
        self.assembler = FrameAssembler(params.stream.depth_scale)
        self.poses = TransformBuffer(tolerance=params.stream.tf_tolerance_s, max_age=30.0)  # tf and pose topic
        self.pairer = ApproxTimePairer(params.stream.sync_slop_s)
        self.waiting = PoseWait(params.stream.pose_wait_s)
        self.last_header: Any = None
        self.counters = SessionCounters()
        self._last_stats = time.monotonic()

    # ----------------------------------------------------------------- inputs
    def on_camera_info(self, msg: Any) -> None:
        try:
            self.assembler.set_camera_info(msg)
        except MessageError as exc:
            self._bad(f"camera_info: {exc}")

    def on_pose(self, stamp: float, world_from_camera: np.ndarray) -> None:
        """A pose-topic sample (PoseStamped / Odometry, already a 4x4 matrix)."""
        try:
            self.poses.add(self.stream.map_frame, POSE_TOPIC_FRAME, stamp, world_from_camera)
        except ValueError as exc:
            self._bad(f"pose: {exc}")
        self.resolve_waiting()

    def on_transforms(self, transforms: Any, static: bool = False) -> None:
        """The ``transforms`` of a tf2_msgs/TFMessage from /tf (or /tf_static with ``static``)."""
        for t in transforms:
            try:
                self.poses.add(t.header.frame_id, t.child_frame_id, stamp_to_seconds(t.header.stamp),
                               matrix_from_transform(t.transform), static=static)
            except (MessageError, ValueError, AttributeError) as exc:
                self._bad(f"tf: {exc}")
        self.resolve_waiting()

    def on_color(self, msg: Any) -> None:
        self._on_image("color", msg)

    def on_depth(self, msg: Any) -> None:
        self._on_image("depth", msg)

    def _on_image(self, kind: str, msg: Any) -> None:
        try:
            stamp = stamp_to_seconds(msg.header.stamp)
        except MessageError as exc:
            self._bad(f"{kind} image: {exc}")
            return
        pair = self.pairer.push(kind, stamp, msg)
        if pair is not None:
            self.waiting.add(WaitingPair(pair[0], pair[1], pair[2], time.monotonic()))
            self.resolve_waiting()

    def _pose_of(self, pair: WaitingPair, wait: bool) -> np.ndarray:
        source = POSE_TOPIC_FRAME if self.stream.pose_topic else \
            (self.stream.camera_frame or getattr(pair.color.header, "frame_id", ""))
        return self.poses.lookup(self.stream.map_frame, source, pair.stamp, wait=wait)

    def resolve_waiting(self, now: float | None = None) -> int:
        """Submit every waiting pair whose pose is now known; give up on those older than ``pose_wait_s``.
        Returns the pairs submitted. Call on every pose and on a timer; it never blocks."""
        now = time.monotonic() if now is None else now
        lost_before = sum(self.waiting.lost.values())
        ready = self.waiting.resolve(self._pose_of, now)
        for pair, pose in ready:
            self.counters.waited_for_pose += pair.waited
            self.on_images(pair.color, pair.depth, pose)
        lost = sum(self.waiting.lost.values()) - lost_before
        self.counters.no_pose += lost
        self.counters.color_depth_pairs += lost
        return len(ready)

    def on_images(self, color_msg: Any, depth_msg: Any, world_from_camera: np.ndarray | None) -> str:
        """A synchronised colour/depth pair and its pose (None: no pose could be found). Never blocks."""
        self.counters.color_depth_pairs += 1
        if world_from_camera is None:
            self.counters.no_pose += 1
            return "no_pose"
        try:
            frame = self.assembler.assemble(color_msg, depth_msg, world_from_camera)
        except (MessageError, FrameError) as exc:
            self._bad(str(exc))
            return "bad_message"
        self.worker.submit(frame)
        self.counters.submitted += 1
        self.last_header = color_msg.header  # renders are stamped like the newest mapped image
        return "submitted"

    def _bad(self, reason: str) -> None:
        key = reason[:100]
        self.counters.bad_messages[key] = self.counters.bad_messages.get(key, 0) + 1
        if self.counters.bad_messages[key] == 1:
            log.warning("ignoring input: %s", reason)

    # ----------------------------------------------------------------- outputs
    def stats_line(self) -> str:
        s, trainer_counters = self.worker.mapper.counters()
        failures = trainer_counters.get("semantic_failures", {})
        rejected = dict(s.rejected)
        return (f"pairs {self.counters.color_depth_pairs}, mapped {self.worker.processed}, dropped while busy "
                f"{self.worker.dropped}, no pose {self.counters.no_pose}{self._no_pose_reasons()}, keyframes "
                f"{s.keyframes} (held {s.keyframes_held}, {s.keyframe_bytes / 2**20:.0f} MB), Gaussians {s.gaussians}"
                + (f", poses refined {s.poses_refined} (drift corrected {s.drift_correction[0] * 100:.1f} cm, "
                   f"{s.drift_correction[1]:.1f} deg)" if s.poses_refined else "")
                + (f", frames tracked {s.frames_tracked} (lost {s.frames_not_tracked})" if s.frames_tracked else "")
                + (f", {self.worker.ms_per_frame_prepared:.0f} ms a frame prepared" if self.worker.prepared else "")
                + (f", {self.worker.seconds_per_keyframe:.2f} s a keyframe ({describe_phases(s.seconds, s.keyframes)})"
                   if self.worker.outcomes["keyframe"] else "")
                + (f", rejected {rejected}" if rejected else "")
                + (f", bad messages {sum(self.counters.bad_messages.values())}" if self.counters.bad_messages else "")
                + (f", keyframes without semantics {sum(failures.values())} (source failed)" if failures else "")
                + (f", semantics lag {trainer_counters['semantic_lag_s']:.1f} s (skipped "
                   f"{trainer_counters['semantics_skipped']})" if "semantic_lag_s" in trainer_counters else "")
                + (f", 3DCS rounds {trainer_counters['pseudo_label_rounds']} (due while frames waited "
                   f"{trainer_counters['dcs_rounds_waited']})" if trainer_counters.get("pseudo_label_rounds")
                   or trainer_counters.get("dcs_rounds_waited") else "")
                + (f", decoder refits while quiet {self.worker.idle_refits}" if self.worker.idle_refits else ""))

    def _no_pose_reasons(self) -> str:
        lost = {k: v for k, v in self.waiting.lost.items() if v}
        waited = f", waited for a late pose {self.counters.waited_for_pose}" if self.counters.waited_for_pose else ""
        return (f" ({', '.join(f'{k} {v}' for k, v in lost.items())})" if lost else "") + waited

    def due_stats(self) -> str | None:
        """The counters line if ``stats_period_s`` has passed since the last one (low-rate logging)."""
        now = time.monotonic()
        if now - self._last_stats < self.settings.stats_period_s:
            return None
        self._last_stats = now
        return self.stats_line()

    @property
    def last_camera(self) -> Camera | None:
        """The camera of the last frame the mapper took (a frame it rejected, e.g. a 1x1 image, never counts)."""
        return self.worker.mapper.last_input_camera

    def _camera(self, world_from_camera: np.ndarray | None) -> Camera | None:
        """The latest camera, or its intrinsics at another pose; None before the first frame."""
        last = self.last_camera
        if last is None or world_from_camera is None:
            return last
        return Camera(last.K, last.width, last.height, world_from_camera)

    @hands_back_team
    def render(self, world_from_camera: np.ndarray | None = None) -> RenderedViews | None:
        """The map from a pose or the latest camera, colour + depth + semantics in one pass (None: nothing yet)."""
        cam = self._camera(world_from_camera)
        snap = self.worker.snapshot()
        gmap, decoder = snap.gaussians, snap.decoder
        if cam is None or len(gmap) == 0:
            return None
        with torch.no_grad():
            out = gmap.render(cam, semantic=decoder is not None)
        rgb = to_uint8(out.rgb.cpu().numpy())
        semantic = labels = None
        if decoder is not None:
            labels = labels_from_render(out, decoder, self.semantics.vocabulary,
                                        self.settings.coherent_labels).astype(np.uint16)
            semantic = colorize_labels(labels)
        return RenderedViews(rgb, out.expected_depth().cpu().numpy().astype(np.float32), semantic, labels)

    @hands_back_team
    def cloud(self) -> tuple[np.ndarray, np.ndarray]:
        """Gaussian centres (N, 3) float32 and colours (N, 3) uint8, at most ``max_cloud_points`` (most opaque)."""
        gmap = self.worker.snapshot().gaussians
        gmap = gmap.select(gmap.strongest(self.settings.max_cloud_points))
        rgb = to_uint8(gmap.rgb.cpu().numpy())
        return gmap.means.cpu().numpy().astype(np.float32), rgb

    @hands_back_team
    def save_map(self, path: str = "") -> tuple[bool, str]:
        target = Path(path or self.settings.autosave_path).expanduser()
        if not str(target) or str(target) == ".":
            return False, "no path given and autosave_path is empty"
        snap = self.worker.snapshot()
        gmap, decoder = snap.gaussians, snap.decoder
        if len(gmap) == 0:
            return False, "the map is empty (no keyframe mapped yet)"
        trajectory = self.keyframe_trajectory()
        try:
            written = save_ply(gmap, target)
            if decoder is not None:
                save_semantics(self.semantics.model(decoder, {"source": "ros node"}), written)
            save_trajectory(trajectory, trajectory_path(written))
        except OSError as exc:
            return False, f"cannot write {target}: {exc}"
        extra = " with its semantic model (clipgs query can answer on it)" if decoder is not None else ""
        return True, f"saved {len(gmap)} Gaussians to {written}{extra} and its {len(trajectory)} keyframe poses"

    def keyframe_trajectory(self) -> list[TrajectoryPose]:
        """Every keyframe's pose as it joined the map (refined where poses come from odometry), oldest first.
        No map lock: the store only appends to the list, and copying a list is one step for the interpreter, so
        the node's publisher does not wait for a mapping step to end."""
        return list(self.worker.mapper.keyframes.trajectory)

    @hands_back_team
    def query(self, label: str, world_from_camera: np.ndarray | None = None) -> QueryResult:
        """Text query: mask + relevancy in a view (a pose or the latest camera) and the matching 3D region."""
        if not label or not label.strip():
            return QueryResult(False, "empty label: give an object name such as 'chair'")
        label = label.strip()
        snap = self.worker.snapshot()
        gmap, decoder = snap.gaussians, snap.decoder
        if len(gmap) == 0:
            return QueryResult(False, "the map is empty (no keyframe mapped yet)")
        if self.semantics.text is None:
            return QueryResult(False, f"cannot answer '{label}': {self.semantics_status}")
        if decoder is None:
            return QueryResult(False, f"cannot answer '{label}': no keyframe with semantics mapped yet")
        text = self.semantics.text
        negatives = text.encode(negative_names(self.semantics.classes, label))  # as `clipgs query` does
        answer = query_map(gmap, decoder, text.encode([label])[0], negatives, self._camera(world_from_camera))
        mask = (answer.mask * 255).astype(np.uint8)
        if answer.centroid is None:
            best = float(answer.relevancy.max(initial=0.0))
            return QueryResult(False, f"nothing in the map matches '{label}' (highest relevancy in view {best:.2f})",
                               mask, answer.relevancy)
        return QueryResult(True, f"'{label}' in {self.stream.map_frame} (m): {describe_instances(answer.instances)}",
                           mask, answer.relevancy, answer.score, answer.centroid, answer.box_min, answer.box_max,
                           answer.instances)

    def shutdown(self, autosave: bool = True) -> str | None:
        """Stop the worker (finishing the frame in hand) and autosave, the map finished first (the final 3DCS round
        and the decoder refit, at most ``finish_budget_s``); returns what was done."""
        self.worker.stop(timeout=60.0)
        self.worker.mapper.trainer.close()
        if autosave and self.settings.autosave_path:
            deadline = time.monotonic() + self.settings.finish_budget_s
            self.worker.mapper.finish(stop=lambda: time.monotonic() >= deadline)
            ok, msg = self.save_map()
            refit = self.worker.mapper.counters()[1].get("decoder_refit")
            msg += f" (decoder refit first: {refit})" if ok and refit is not None else ""
            return msg if ok else f"autosave skipped: {msg}"
        return None
