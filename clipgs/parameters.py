"""Every setting of a mapping run, in one flat namespace: the ROS node's parameters, the params file, and
``clipgs map --config`` all use these keys.

The groups and their order are listed once in ``GROUPS``; ``config/mapping.yaml`` is generated from them
(``clipgs params --out config/mapping.yaml``; a test fails when the shipped file differs).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clipgs.data.ros_stream import StreamSettings
from clipgs.errors import SettingsError
from clipgs.mapping.config import MapperConfig
from clipgs.semantics.config import SemanticTrainingConfig
from clipgs.semantics.factory import SemanticSettings
from clipgs.settings import ROS_NODE_NAME, Check, Settings, SettingSpec, at_least, read_settings_file, setting

TORCH_DEVICE = Check("cpu, cuda or cuda:N", lambda v: re.fullmatch(r"cpu|cuda(:\d+)?", str(v)) is not None)


@dataclass
class NodeSettings(Settings):
    """Node-only settings (ROS parameters beside the mapper's and the stream's)."""

    render_rate_hz: float = setting(2.0, "rate of rendered images from the latest camera pose (0: off)",
                                    at_least(0.0))
    cloud_rate_hz: float = setting(0.5, "rate of the map cloud (Gaussian centres with colour; 0: off)",
                                   at_least(0.0))
    max_cloud_points: int = setting(200_000, "cap on published cloud points (most opaque first)", at_least(1))
    stats_period_s: float = setting(10.0, "period of the counters log line (frames, keyframes, dropped, "
                                          "rejected)", at_least(0.0))
    autosave_path: str = setting("~/.ros/clipgs_map.ply", "map written on shutdown (PLY); empty: no autosave")
    finish_budget_s: float = setting(40.0, "on shutdown, the map's finishing work before the autosave (the final "
                                           "3DCS round, the decoder refit) stops after this long: the launch file "
                                           "gives the node this + 20 s after Ctrl-C (at least 60 s); 0: none done",
                                     at_least(0.0))
    device: str = setting("cpu", "torch device for mapping", TORCH_DEVICE)
    idle_refit_s: float = setting(5.0, "semantic decoder refit while the stream is quiet: after this long without a "
                                       "new keyframe (the robot stopped) the map thread refits the decoder once per "
                                       "new map (refit_steps; renders and queries go on; frames wait as while "
                                       "mapping); 0: off", at_least(0.0))
    coherent_labels: bool = setting(True, "semantic images labelled by segments of the render (each takes its "
                                          "pixels' majority class: no speckle; ~0.05-0.2 s per image on a CPU); "
                                          "false: per pixel")


# (file section title, group): the params file's order.
GROUPS: tuple[tuple[str, type[Settings]], ...] = (
    ("stream", StreamSettings),
    ("node", NodeSettings),
    ("mapper", MapperConfig),
    ("semantic training (SAC, 3DCS; used when semantic_source is not none)", SemanticTrainingConfig),
    ("semantics (the 2D teacher; weights only from local paths)", SemanticSettings),
)


@dataclass
class Parameters:
    """All groups of one run."""

    stream: StreamSettings = field(default_factory=StreamSettings)
    node: NodeSettings = field(default_factory=NodeSettings)
    mapper: MapperConfig = field(default_factory=MapperConfig)
    training: SemanticTrainingConfig = field(default_factory=SemanticTrainingConfig)
    semantics: SemanticSettings = field(default_factory=SemanticSettings)

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> Parameters:
        """Flat values (ROS parameters, a YAML file) -> every group; an unknown key is an error."""
        known = {spec.name for spec in parameter_specs()}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SettingsError(f"unknown parameter(s) {unknown}; see config/mapping.yaml for every parameter")
        groups = [group.from_dict(values, ignore_unknown=True) for _, group in GROUPS]
        return cls(*groups)

    @classmethod
    def from_yaml(cls, path: str | Path | None) -> Parameters:
        """A flat YAML or a ROS 2 params file (``clipgs_mapping: ros__parameters:``); None: the defaults."""
        return cls() if path is None else cls.from_flat(read_settings_file(path))


def shutdown_timeout_s(params_file: str | Path | None, margin_s: float = 20.0) -> float:
    """Seconds a launch file gives the node after Ctrl-C before it escalates to SIGTERM: the params file's
    ``finish_budget_s`` + ``margin_s`` (the frame in hand, the save), at least 60; 60 when the file cannot be read
    (the node then reports what is wrong with it)."""
    try:
        budget = Parameters.from_yaml(params_file).node.finish_budget_s
    except SettingsError:
        return 60.0
    return max(60.0, budget + margin_s)


def parameter_specs() -> list[SettingSpec]:
    """Every parameter (name, default, help, constraints) in the params file's order."""
    return [spec for _, group in GROUPS for spec in group.specs()]


def params_file_text() -> str:
    """The ROS 2 params file with every parameter, its default, help text and constraints."""
    lines = ["# Parameters of the clipgs mapping node (ros2 launch clipgs_ros mapping.launch.py).",
             "# The same file works offline: clipgs map BAG --topics config/mapping.yaml --config config/mapping.yaml",
             "# Generated by `clipgs params --out config/mapping.yaml` from the settings classes: edit those.",
             f"{ROS_NODE_NAME}:", "  ros__parameters:"]
    for title, group in GROUPS:
        lines.append(f"    # --- {title}")
        for spec in group.specs():
            value = yaml.safe_dump(spec.default, default_flow_style=True, width=10_000).strip()
            value = value.removesuffix("\n...").removesuffix("...").strip()
            note = spec.help + (f" (valid: {spec.constraints})" if spec.constraints else "")
            lines.append(f"    {spec.name}: {value}  # {note}")
    return "\n".join(lines) + "\n"
