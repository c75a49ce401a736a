"""MapperConfig: the geometry mapper's settings (gating, growth, optimisation, pruning), with help and checks.

The semantic trainer keeps its own settings (SemanticTrainingConfig); the ROS params file and a
``clipgs map --config`` YAML hold both groups under the same flat keys (see :mod:`clipgs.parameters`).
"""
from __future__ import annotations

from dataclasses import dataclass

from clipgs.errors import SettingsError
from clipgs.render import BACKENDS
from clipgs.settings import Settings, at_least, greater_than, in_range, one_of, setting

UNIT = in_range(0.0, 1.0)


AUTO_POSE_REFINE_ITERS = 15  # pose_refine_iters: -1 with poses from odometry
AUTO_TRACK_ITERS = 6  # track_iters: -1 with poses from odometry


@dataclass
class MapperConfig(Settings):
    # Keyframe gating: a frame becomes a keyframe if it moved or turned enough, or sees too little of the last one.
    kf_translation_m: float = setting(0.15, "new keyframe after this much camera translation (m)", at_least(0.0))
    kf_rotation_deg: float = setting(12.0, "new keyframe after this much camera rotation (deg)", at_least(0.0))
    kf_min_overlap: float = setting(0.85, "new keyframe when less than this fraction of the last keyframe is "
                                    "still seen", UNIT)
    # Growth (SplaTAM-style): add Gaussians where the map is transparent or behind the observed surface.
    grow_alpha: float = setting(0.5, "add Gaussians where the rendered opacity is below this", UNIT)
    grow_depth_margin: float = setting(0.05, "add Gaussians where observed depth < rendered * (1 - margin)",
                                       in_range(0.0, 1.0, open_high=True))
    grow_pixel_stride: int = setting(0, "pixel stride when adding Gaussians at a keyframe (0: auto, about one "
                                        "sample per pixel of a 160x120 view at any mapping resolution)", at_least(0))
    initial_opacity: float = setting(0.5, "opacity of new Gaussians", in_range(0.0, 1.0, open_low=True,
                                                                                open_high=True))
    init_pixel_stride: int = setting(0, "pixel stride for the first keyframe (0: auto, as grow_pixel_stride)",
                                     at_least(0))
    # Optimisation over a keyframe window.
    map_width: int = setting(0, "map frames at this width, height and intrinsics scaled alike (0: the camera's; "
                                "e.g. 320 for a 640x480 camera); renders and queries answer at any size", at_least(0))
    max_map_width: int = setting(1280, "frames wider than this are mapped at this width when map_width is 0 (a "
                                       "12 MP frame: 10 s for its first keyframe instead of 207 s; 0: no cap)",
                                 at_least(0))
    cpu_map_width: int = setting(320, "on the CPU, frames wider than this are mapped at this width when map_width "
                                      "is 0 (two cores keep up with a 640x480 stream at 320: 26.8 dB against 18.9 "
                                      "at full size; 0: no cap)", at_least(0))
    cpu_semantic_map_width: int = setting(160, "on the CPU with semantics on, frames wider than this are mapped at "
                                               "this width when map_width is 0 (a 640x480 walk streamed on two "
                                               "cores: 171 keyframes, 27.8 dB, 59.5 mIoU at 160 against 80, 26.9 dB "
                                               "and 48.2 at 320; 0: cpu_map_width alone)", at_least(0))
    keyframe_budget_mb: float = setting(1024.0, "memory for stored keyframes (colour, depth, masks, labels); past "
                                                "it the most redundant older keyframes go (0: no limit)",
                                        at_least(0.0))
    pose_refine_iters: int = setting(-1, "refine each new keyframe's pose for this many steps before it joins, and "
                                         "carry the correction to later frames; -1: auto, 15 when the poses come "
                                         "from odometry (a nav_msgs/Odometry pose topic; a dataset with "
                                         "gt_traj_w_c.txt beside a drifting traj_w_c.txt), else 0 (poses taken as "
                                         "exact)", at_least(-1))
    pose_refine_method: str = setting("icp", "how a keyframe's pose is refined: 'icp' (its depth against held "
                                             "keyframes' depth, point-to-plane), 'photometric' (colour + depth "
                                             "against the map's render) or 'icp+photometric'",
                                      one_of(("icp", "photometric", "icp+photometric")))
    pose_refine_views: int = setting(3, "held keyframes nearest in pose that a new keyframe's ICP pairs its depth "
                                        "with, all at once (one view's noise and pose error average out; 1: the "
                                        "nearest alone)", at_least(1))
    pose_refine_colour: float = setting(0.03, "weight of the colour term in a new keyframe's ICP (coloured ICP: "
                                              "texture pins motion along planes that depth leaves free; an "
                                              "intensity error of 0.06 weighs like 1 cm of depth; 0: depth only)",
                                        at_least(0.0))
    track_iters: int = setting(-1, "refine every frame's pose by ICP against the previous frame's depth for this "
                                   "many steps (~12 ms a frame at 160x120 here, resizing included), so fast turns "
                                   "between keyframes are followed; -1: auto, 6 when the poses come from odometry, "
                                   "else 0", at_least(-1))
    pose_refine_lr: float = setting(2e-3, "Adam learning rate of the pose correction (m, rad)", greater_than(0.0))
    pose_refine_min_gain: float = setting(0.2, "keep a pose correction only if it lowers the loss by this share "
                                               "(0: any decrease; long drifting walks track better with 0)", UNIT)
    pose_refine_min_coverage: float = setting(0.7, "refine only views the map covers on this share of their "
                                                   "valid pixels", UNIT)
    iters_per_keyframe: int = setting(15, "optimisation iterations per keyframe", at_least(1))
    window_size: int = setting(6, "recent keyframes optimised together", at_least(1))
    random_keyframes: int = setting(2, "older keyframes added to each window at random", at_least(0))
    view_steps: bool = setting(True, "each step trains only the Gaussians its keyframe sees (selective Adam: the "
                                     "others keep their moments), so a step costs what the view holds, not the map")
    occlusion_margin_m: float = setting(0.1, "with view_steps, a step also leaves out the Gaussians more than this "
                                             "far behind its keyframe's observed depth on every pixel they could "
                                             "touch (walls hide the next room's; 0: only the frustum)",
                                        at_least(0.0))
    lr_means: float = setting(5e-4, "Adam learning rate, means (m)", greater_than(0.0))
    lr_quats: float = setting(1e-3, "Adam learning rate, rotations", greater_than(0.0))
    lr_log_scales: float = setting(5e-3, "Adam learning rate, log-scales", greater_than(0.0))
    lr_opacity_logits: float = setting(5e-2, "Adam learning rate, opacity logits", greater_than(0.0))
    lr_sh0: float = setting(5e-3, "Adam learning rate, colour", greater_than(0.0))
    w_color: float = setting(1.0, "weight of the colour loss", at_least(0.0))
    w_ssim: float = setting(0.2, "share of (1 - SSIM) in the colour loss", UNIT)
    w_depth: float = setting(0.5, "weight of the L1 depth loss", at_least(0.0))
    color_radius_px: int = setting(3, "fit colour only within this many pixels of valid depth (beyond the depth "
                                      "sensor's range nothing is grown, and fitting colour there pulls floaters "
                                      "in front of the camera); -1: everywhere", at_least(-1))
    # Pruning and limits.
    prune_opacity: float = setting(0.02, "remove Gaussians less opaque than this", in_range(0.0, 1.0,
                                                                                          open_high=True))
    prune_max_scale_m: float = setting(0.25, "remove Gaussians larger than this (m)", greater_than(0.0))
    max_gaussians: int = setting(300_000, "hard cap on the number of Gaussians", at_least(1))
    # Frame checks.
    min_valid_depth_fraction: float = setting(0.05, "reject frames with less valid depth than this fraction", UNIT)
    max_speed_mps: float = setting(5.0, "reject a frame whose camera moved faster than this (m/s) since the last "
                                        "accepted one (odometry glitch), counted as pose_jump; 3 consistent frames "
                                        "in a row after a jump are accepted (relocalised); 0 = no check",
                                   at_least(0.0))
    # Misc.
    clock_reset_s: float = setting(3.0, "a frame stamped this far (s) behind the last is a clock reset (bag loop, "
                                        "sim time restarted, a stamp far ahead before it): mapped and counted; "
                                        "smaller steps back are rejected", greater_than(0.0))
    backend: str = setting("auto", "render backend (auto: gsplat on CUDA, the compiled kernel on CPU)",
                           one_of(BACKENDS))
    seed: int = setting(0, "random seed (keyframe sampling, semantic pixel sampling, decoder initialisation)")

    def resolved(self, poses_from_odometry: bool) -> MapperConfig:
        """This config with ``pose_refine_iters`` and ``track_iters`` -1 (auto) made concrete. Frame tracking plus
        ICP against the nearest keyframe take the drifting apartment's keyframe ATE from 26 cm to 1 cm, but on
        exact poses any refinement adds a small random walk of its own (apartment, true poses, keyframe ICP: ATE
        2.8 cm, 24.7 against 27.7 dB): on for odometry only."""
        auto = {}
        if self.pose_refine_iters < 0:
            auto["pose_refine_iters"] = AUTO_POSE_REFINE_ITERS if poses_from_odometry else 0
        if self.track_iters < 0:
            auto["track_iters"] = AUTO_TRACK_ITERS if poses_from_odometry else 0
        return self.replace(**auto) if auto else self

    def auto_map_width(self, frame_width: int, device_type: str, semantic: bool = False) -> int:
        """The width a ``frame_width`` frame is mapped at when ``map_width`` is 0 (0: its own): the tightest of
        ``max_map_width`` and, on the CPU, ``cpu_map_width`` (and ``cpu_semantic_map_width`` when ``semantic``:
        the map trains attribute channels)."""
        cpu = (self.cpu_map_width, self.cpu_semantic_map_width if semantic else 0) if device_type == "cpu" else ()
        caps = [w for w in (self.max_map_width, *cpu) if w > 0]
        cap = min(caps, default=0)
        return cap if 0 < cap < frame_width else 0

    def validate(self) -> None:
        if self.w_color == 0 and self.w_depth == 0:
            raise SettingsError("settings w_color and w_depth are both 0: the map would have nothing to fit")
