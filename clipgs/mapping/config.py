"""MapperConfig: every mapping setting in one flat dataclass; the ROS params file uses the same keys."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

ROS_NODE_NAME = "clipgs_mapping"


def read_parameter_file(path: str | Path) -> tuple[dict, bool]:
    """(settings, is_ros_layout) of a YAML file: flat keys, or ``clipgs_mapping: {ros__parameters: {...}}``."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings")
    if ROS_NODE_NAME in data:
        return dict(data[ROS_NODE_NAME].get("ros__parameters", {}) or {}), True
    return data, False


def coerce_fields(cls, values: dict) -> dict:
    """``values`` cast to the types of ``cls``'s defaults (YAML and ROS give 2 where 2.0 is meant).

    Keys must be fields of ``cls``; callers filter or reject unknown keys with their own message.
    """
    defaults = cls()
    out = {}
    for k, v in values.items():
        kind = type(getattr(defaults, k))
        out[k] = kind(v) if kind in (int, float, str) and not isinstance(v, bool) else v
    return out


@dataclass
class MapperConfig:
    # Keyframe gating: a frame becomes a keyframe if it moved or turned enough, or sees too little of the last one.
    kf_translation_m: float = 0.15
    kf_rotation_deg: float = 12.0
    kf_min_overlap: float = 0.85  # fraction of the last keyframe's points visible and consistent in the new frame
    # Growth (SplaTAM-style): add Gaussians where the map is transparent or behind the observed surface.
    grow_alpha: float = 0.5
    grow_depth_margin: float = 0.05  # relative: observed depth < rendered * (1 - margin) means new geometry in front
    grow_pixel_stride: int = 1
    initial_opacity: float = 0.5
    init_pixel_stride: int = 1  # the first frame
    # Optimisation over a keyframe window.
    iters_per_keyframe: int = 15
    window_size: int = 6
    random_keyframes: int = 2
    lr_means: float = 5e-4
    lr_quats: float = 1e-3
    lr_log_scales: float = 5e-3
    lr_opacity_logits: float = 5e-2
    lr_sh0: float = 5e-3
    lr_semantics: float = 5e-3
    w_color: float = 1.0
    w_ssim: float = 0.2
    w_depth: float = 0.5
    # Pruning and limits.
    prune_opacity: float = 0.02
    prune_max_scale_m: float = 0.25
    max_gaussians: int = 300_000
    # Frame checks.
    min_valid_depth_fraction: float = 0.05
    # Semantics (SAC): used when sem_dim > 0 and the mapper has a semantic source.
    sem_dim: int = 0
    w_sem: float = 0.5  # cosine to the mask embedding
    w_sem_contrast: float = 0.1  # contrast against the frame's other embeddings
    w_sem_var: float = 0.1  # one object, one semantic: spread of decoded features inside a mask
    sem_tau: float = 0.1
    sem_pixels: int = 4096  # mask pixels sampled per step for the semantic losses
    sem_hidden: int = 128  # decoder MLP width; 0: no decoder, attributes are the embeddings (sem_dim = D)
    lr_decoder: float = 1e-3
    # Paper-v2 3D term: decoded features of neighbouring Gaussians (k nearest within a radius) pulled together.
    w_sem_knn: float = 0.0  # 0: off
    sem_knn_k: int = 8
    sem_knn_anchors: int = 2048  # Gaussians sampled per keyframe whose neighbourhoods are regularised
    sem_knn_radius_m: float = 0.03
    # 3DCS (3D coherent self-training): needs a vocabulary; 0 switches it off.
    dcs_start: int = 20  # keyframes mapped before the first round: early pseudo-labels would lock in errors
    dcs_every: int = 10  # relabel every this many keyframes
    dcs_confidence: float = 0.5  # pixels below this softmax confidence do not vote and get no pseudo-label
    dcs_tau: float = 0.01  # temperature of the labelling softmax (CLIP's logit scale is 100)
    w_dcs: float = 0.5  # weight of the cross-entropy on pseudo-labels
    dcs_novel_views: int = 1  # per round: views rendered between consecutive keyframes, labelled, trained on
    dcs_novel_steps: int = 2  # semantic-only steps on those views per keyframe
    # Misc.
    backend: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ["iters_per_keyframe", "window_size", "grow_pixel_stride", "init_pixel_stride", "max_gaussians"]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"MapperConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("kf_min_overlap", "grow_alpha", "initial_opacity", "min_valid_depth_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"MapperConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.initial_opacity < 1.0:
            raise ValueError(f"MapperConfig.initial_opacity must be in (0, 1), got {self.initial_opacity}")

    @classmethod
    def from_dict(cls, values: dict) -> MapperConfig:
        """Build from a flat dict; unknown keys are an error (a typo must not be silently ignored)."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown mapper setting(s) {unknown}; known: {sorted(known)}")
        return cls(**coerce_fields(cls, values))

    @classmethod
    def from_yaml(cls, path: str | Path) -> MapperConfig:
        """Read flat keys, or the ROS 2 params layout ``clipgs_mapping: {ros__parameters: {...}}``.

        In the ROS layout, keys not belonging to the mapper (topics, frames) are left to the node.
        """
        data, ros_layout = read_parameter_file(path)
        if ros_layout:
            names = {f.name for f in fields(cls)}
            data = {k: v for k, v in data.items() if k in names}
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path
