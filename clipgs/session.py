"""MappingSession: everything the ROS node does, without ROS (the node only wires topics to these calls).

Inputs arrive as ROS-shaped messages (any objects with ROS field names) plus poses as 4x4 matrices;
outputs are numpy arrays and plain results the node turns into messages.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipgs.data.frame import Camera, FrameError
from clipgs.data.images import colorize_labels, to_uint8
from clipgs.data.ros_messages import MessageError
from clipgs.data.ros_stream import FrameAssembler, StreamSettings, TransformBuffer
from clipgs.mapping import save_ply
from clipgs.mapping.config import MapperConfig, coerce_fields
from clipgs.mapping.mapper import IncrementalMapper
from clipgs.mapping.worker import MapperWorker
from clipgs.semantics.factory import SemanticSettings, SemanticStack, build_semantics, with_semantic_channels
from clipgs.semantics.model import save_semantics
from clipgs.semantics.pipeline import labels_from_render
from clipgs.semantics.query import CANONICAL_NEGATIVES, QueryInstance, describe_instances, query_map

log = logging.getLogger(__name__)
POSE_TOPIC_FRAME = "__pose_topic__"


@dataclass
class NodeSettings:
    """Node-only settings (ROS parameters beside the mapper's and the stream's)."""

    render_rate_hz: float = 2.0  # rendered images from the latest camera pose
    cloud_rate_hz: float = 0.5  # map cloud (Gaussian centres)
    max_cloud_points: int = 200_000
    stats_period_s: float = 10.0  # how often counters (dropped frames, rejections) are logged
    autosave_path: str = "~/.ros/clipgs_map.ply"  # written on shutdown; empty: no autosave
    device: str = "cpu"


PARAMETER_DESCRIPTIONS = {
    # stream
    "color_topic": "sensor_msgs/Image colour topic (rgb8, bgr8, rgba8, bgra8, mono8)",
    "depth_topic": "sensor_msgs/Image depth topic aligned to colour (16UC1 mm or 32FC1 m)",
    "camera_info_topic": "sensor_msgs/CameraInfo of the colour camera (K; images assumed rectified)",
    "pose_topic": "empty: poses from tf; else a geometry_msgs/PoseStamped or nav_msgs/Odometry topic",
    "pose_topic_type": "message type of pose_topic: PoseStamped or Odometry",
    "map_frame": "fixed frame of the map and of all outputs",
    "camera_frame": "camera optical frame for tf lookups; empty: the colour image's header.frame_id",
    "sync_slop_s": "max stamp difference (s) between colour and depth to pair them",
    "depth_scale": "16UC1 depth units per metre",
    "tf_tolerance_s": "max extrapolation (s) of pose lookups",
    # node
    "render_rate_hz": "rate of rendered images from the latest camera pose (0: off)",
    "cloud_rate_hz": "rate of the map cloud (Gaussian centres with colour; 0: off)",
    "max_cloud_points": "cap on published cloud points (most opaque first)",
    "stats_period_s": "period of the counters log line (frames, keyframes, dropped, rejected)",
    "autosave_path": "map written on shutdown (PLY); empty: no autosave",
    "device": "torch device for mapping (cpu or cuda)",
    # mapper
    "kf_translation_m": "new keyframe after this much camera translation (m)",
    "kf_rotation_deg": "new keyframe after this much camera rotation (deg)",
    "kf_min_overlap": "new keyframe when less than this fraction of the last keyframe is still seen",
    "grow_alpha": "add Gaussians where the rendered opacity is below this",
    "grow_depth_margin": "add Gaussians where observed depth < rendered * (1 - margin)",
    "grow_pixel_stride": "pixel stride when adding Gaussians at a keyframe",
    "initial_opacity": "opacity of new Gaussians",
    "init_pixel_stride": "pixel stride for the first keyframe",
    "iters_per_keyframe": "optimisation iterations per keyframe",
    "window_size": "recent keyframes optimised together",
    "random_keyframes": "older keyframes added to each window at random",
    "lr_means": "Adam learning rate, means (m)",
    "lr_quats": "Adam learning rate, rotations",
    "lr_log_scales": "Adam learning rate, log-scales",
    "lr_opacity_logits": "Adam learning rate, opacity logits",
    "lr_sh0": "Adam learning rate, colour",
    "lr_semantics": "Adam learning rate, semantic attributes",
    "w_color": "weight of the colour loss",
    "w_ssim": "share of (1 - SSIM) in the colour loss",
    "w_depth": "weight of the L1 depth loss",
    "prune_opacity": "remove Gaussians less opaque than this",
    "prune_max_scale_m": "remove Gaussians larger than this (m)",
    "max_gaussians": "hard cap on the number of Gaussians",
    "min_valid_depth_fraction": "reject frames with less valid depth than this fraction",
    "sem_dim": "semantic attribute channels per Gaussian (0: no semantics)",
    "w_sem": "weight of the cosine loss between decoded attributes and the mask embedding",
    "w_sem_contrast": "weight of the contrastive loss over the frame's mask embeddings",
    "w_sem_var": "weight of the one-object-one-semantic loss (spread inside a mask)",
    "sem_tau": "temperature of the contrastive loss",
    "sem_pixels": "mask pixels sampled per step for the semantic losses",
    "sem_hidden": "semantic decoder MLP width; 0: no decoder, attributes are full embeddings (sem_dim = D)",
    "lr_decoder": "Adam learning rate of the semantic decoder",
    "w_sem_knn": "weight of the 3D term pulling neighbouring Gaussians' semantics together (0: off)",
    "sem_knn_k": "3D term: neighbours per sampled Gaussian",
    "sem_knn_anchors": "3D term: Gaussians sampled per keyframe",
    "sem_knn_radius_m": "3D term: only neighbours closer than this (m)",
    "dcs_start": "3DCS: keyframes mapped before the first relabelling round (warm-up)",
    "dcs_every": "3D coherent self-training: relabel keyframes every this many keyframes (0: off)",
    "dcs_confidence": "3DCS: min softmax confidence of a pixel to vote and to keep a pseudo-label",
    "dcs_tau": "3DCS: temperature of the labelling softmax that confidences are measured with",
    "w_dcs": "3DCS: weight of the cross-entropy on pseudo-labels",
    "dcs_novel_views": "3DCS: views rendered between consecutive keyframes per round and labelled (0: off)",
    "dcs_novel_steps": "3DCS: semantic-only training steps on those novel views per keyframe",
    # semantics
    "semantic_source": "2D semantics: clip_fast (CPU segments + CLIP), clip_sam (SAM + CLIP) or none",
    "clip_model": "open_clip architecture (e.g. ViT-B-16); clipgs-tiny: random-weight smoke test",
    "clip_weights": "local open_clip checkpoint of clip_model (never downloaded); required for real models",
    "sam_model": "clip_sam: segment-anything size (vit_b, vit_l, vit_h)",
    "sam_weights": "clip_sam: local segment-anything checkpoint",
    "sam_points_per_side": "clip_sam: point-prompt grid per image side",
    "max_masks": "largest 2D masks kept per keyframe",
    "semantics_dir": "precomputed: folder written by clipgs extract (offline use)",
    "vocabulary": "comma-separated class names for 3DCS labels and ~/semantic_image colours",
    "backend": "render backend: auto, cpu, torch or gsplat",
    "seed": "random seed (keyframe sampling)",
}


PARAMETER_GROUPS = (StreamSettings, NodeSettings, MapperConfig, SemanticSettings)  # the params file's order


def all_parameters() -> dict[str, Any]:
    """Every node parameter with its default: the mapper's, the stream's and the node's own keys."""
    out: dict[str, Any] = {}
    for cls in PARAMETER_GROUPS:
        defaults = cls()
        out.update({f.name: getattr(defaults, f.name) for f in fields(cls)})
    return out


def split_parameters(values: dict[str, Any]) -> tuple[MapperConfig, StreamSettings, NodeSettings,
                                                      SemanticSettings]:
    """Flat parameter values -> the four settings objects (unknown keys are an error)."""
    known = all_parameters()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}")
    parts = {}
    for cls in PARAMETER_GROUPS:
        names = {f.name for f in fields(cls)}
        parts[cls] = cls(**coerce_fields(cls, {k: v for k, v in values.items() if k in names}))
    return parts[MapperConfig], parts[StreamSettings], parts[NodeSettings], parts[SemanticSettings]


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


class MappingSession:
    """The node's brain: frames in (drop-when-busy), renders / cloud / map file / queries out."""

    def __init__(self, mapper: MapperConfig, stream: StreamSettings, node: NodeSettings,
                 semantics: SemanticSettings | SemanticStack | None = None) -> None:
        """semantics: settings of the 2D source and vocabulary (or an already built stack); None or source
        'none': geometry only. A source that cannot be built (missing weights) leaves semantics off;
        ``semantics_status`` says why and queries repeat it."""
        self.stream, self.settings = stream, node
        self.semantics = semantics if isinstance(semantics, SemanticStack) else SemanticStack()
        self.semantics_status = "semantics off (semantic_source: none)"
        if isinstance(semantics, SemanticSettings) and semantics.semantic_source != "none":
            try:
                self.semantics = build_semantics(semantics, device=node.device)
            except (ValueError, FileNotFoundError) as exc:
                self.semantics_status = f"semantics off: {exc}"
        if self.semantics.source is not None:
            mapper = with_semantic_channels(mapper)
            self.semantics_status = f"semantics on: {self.semantics.description}, d={mapper.sem_dim}, " \
                                    f"{len(self.semantics.classes) - 1} classes"
        self.worker = MapperWorker(IncrementalMapper(mapper, device=node.device, semantic_source=self.semantics.source,
                                                     vocabulary=self.semantics.vocabulary))
        self.assembler = FrameAssembler(stream.depth_scale)
        self.pose_series = TransformBuffer(tolerance=stream.tf_tolerance_s, max_age=30.0)
        self.counters = SessionCounters()
        self.last_camera: Camera | None = None
        self._last_stats = time.monotonic()

    # ----------------------------------------------------------------- inputs
    def on_camera_info(self, msg: Any) -> None:
        try:
            self.assembler.set_camera_info(msg)
        except MessageError as exc:
            self._bad(f"camera_info: {exc}")

    def on_pose(self, stamp: float, world_from_camera: np.ndarray) -> None:
        """A pose-topic sample (PoseStamped / Odometry, already a 4x4 matrix)."""
        self.pose_series.add(self.stream.map_frame, POSE_TOPIC_FRAME, stamp, world_from_camera)

    def pose_from_topic(self, stamp: float) -> np.ndarray | None:
        try:
            return self.pose_series.lookup(self.stream.map_frame, POSE_TOPIC_FRAME, stamp)
        except LookupError:
            return None

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
        self.last_camera = frame.camera
        self.worker.submit(frame)
        self.counters.submitted += 1
        return "submitted"

    def _bad(self, reason: str) -> None:
        key = reason[:100]
        self.counters.bad_messages[key] = self.counters.bad_messages.get(key, 0) + 1
        if self.counters.bad_messages[key] == 1:
            log.warning("ignoring input: %s", reason)

    # ----------------------------------------------------------------- outputs
    def stats_line(self) -> str:
        s = self.worker.mapper.stats
        rejected = dict(s.rejected)
        return (f"pairs {self.counters.color_depth_pairs}, mapped {self.worker.processed}, dropped while busy "
                f"{self.worker.dropped}, no pose {self.counters.no_pose}, keyframes {s.keyframes}, Gaussians "
                f"{s.gaussians}" + (f", rejected {rejected}" if rejected else "")
                + (f", bad messages {sum(self.counters.bad_messages.values())}" if self.counters.bad_messages else "")
                + (f", keyframes without semantics {sum(s.semantic_failures.values())} (source failed)"
                   if s.semantic_failures else ""))

    def due_stats(self) -> str | None:
        """The counters line if ``stats_period_s`` has passed since the last one (low-rate logging)."""
        now = time.monotonic()
        if now - self._last_stats < self.settings.stats_period_s:
            return None
        self._last_stats = now
        return self.stats_line()

    def _camera(self, world_from_camera: np.ndarray | None) -> Camera | None:
        """The latest camera, or its intrinsics at another pose; None before the first frame."""
        if self.last_camera is None or world_from_camera is None:
            return self.last_camera
        return Camera(self.last_camera.K, self.last_camera.width, self.last_camera.height, world_from_camera)

    def render(self, world_from_camera: np.ndarray | None = None) -> RenderedViews | None:
        """The map from a pose or the latest camera, colour + depth + semantics in one pass (None: nothing yet)."""
        cam = self._camera(world_from_camera)
        gmap = self.worker.snapshot()
        if cam is None or len(gmap) == 0:
            return None
        decoder = self.worker.mapper.snapshot_decoder()
        with torch.no_grad():
            out = gmap.render(cam, semantic=decoder is not None)
        rgb = to_uint8(out.image[..., :3].cpu().numpy())
        semantic = labels = None
        if decoder is not None:
            labels = labels_from_render(out, decoder, self.semantics.vocabulary).astype(np.uint16)
            semantic = colorize_labels(labels)
        return RenderedViews(rgb, out.expected_depth().cpu().numpy().astype(np.float32), semantic, labels)

    def cloud(self) -> tuple[np.ndarray, np.ndarray]:
        """Gaussian centres (N, 3) float32 and colours (N, 3) uint8, at most ``max_cloud_points`` (most opaque)."""
        gmap = self.worker.snapshot()
        gmap, _ = gmap.cap(self.settings.max_cloud_points)
        rgb = to_uint8(gmap.rgb.cpu().numpy())
        return gmap.means.cpu().numpy().astype(np.float32), rgb

    def save_map(self, path: str = "") -> tuple[bool, str]:
        target = Path(path or self.settings.autosave_path).expanduser()
        if not str(target) or str(target) == ".":
            return False, "no path given and autosave_path is empty"
        gmap = self.worker.snapshot()
        if len(gmap) == 0:
            return False, "the map is empty (no keyframe mapped yet)"
        decoder = self.worker.mapper.snapshot_decoder()
        try:
            written = save_ply(gmap, target)
            if decoder is not None:
                save_semantics(self.semantics.model(decoder, {"source": "ros node"}), written)
        except OSError as exc:
            return False, f"cannot write {target}: {exc}"
        extra = " with its semantic model (clipgs query can answer on it)" if decoder is not None else ""
        return True, f"saved {len(gmap)} Gaussians to {written}{extra}"

    def query(self, label: str, world_from_camera: np.ndarray | None = None) -> QueryResult:
        """Text query: mask + relevancy in a view (a pose or the latest camera) and the matching 3D region."""
        if not label or not label.strip():
            return QueryResult(False, "empty label: give an object name such as 'chair'")
        label = label.strip()
        gmap = self.worker.snapshot()
        if len(gmap) == 0:
            return QueryResult(False, "the map is empty (no keyframe mapped yet)")
        if self.semantics.text is None:
            return QueryResult(False, f"cannot answer '{label}': {self.semantics_status}")
        decoder = self.worker.mapper.snapshot_decoder()
        if decoder is None:
            return QueryResult(False, f"cannot answer '{label}': no keyframe with semantics mapped yet")
        text = self.semantics.text
        answer = query_map(gmap, decoder, text.encode([label])[0], text.encode(list(CANONICAL_NEGATIVES)),
                           self._camera(world_from_camera))
        mask = (answer.mask * 255).astype(np.uint8)
        if answer.centroid is None:
            best = float(answer.relevancy.max(initial=0.0))
            return QueryResult(False, f"nothing in the map matches '{label}' (highest relevancy in view {best:.2f})",
                               mask, answer.relevancy)
        return QueryResult(True, f"'{label}' in {self.stream.map_frame} (m): {describe_instances(answer.instances)}",
                           mask, answer.relevancy, answer.score, answer.centroid, answer.box_min, answer.box_max,
                           answer.instances)

    def shutdown(self, autosave: bool = True) -> str | None:
        """Stop the worker (finishing the frame in hand) and autosave; returns what was done."""
        self.worker.stop(timeout=60.0)
        if autosave and self.settings.autosave_path:
            ok, msg = self.save_map()
            return msg if ok else f"autosave skipped: {msg}"
        return None
