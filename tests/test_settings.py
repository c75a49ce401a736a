"""One settings schema: every field validated, the params file and the ROS descriptors generated from it."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from clipgs.errors import SettingsError
from clipgs.mapping.config import MapperConfig
from clipgs.parameters import GROUPS, NodeSettings, Parameters, parameter_specs, params_file_text
from clipgs.semantics.config import SemanticTrainingConfig
from clipgs.settings import coerce, split_overrides

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = {spec.name: spec.default for spec in parameter_specs()}


def test_the_shipped_params_file_is_the_generated_one():
    shipped = (ROOT / "config" / "mapping.yaml").read_text()
    assert shipped == params_file_text(), "regenerate it: clipgs params --out config/mapping.yaml"
    values = yaml.safe_load(shipped)["clipgs_mapping"]["ros__parameters"]
    assert values == DEFAULTS


def test_every_setting_has_help_and_names_are_unique_across_groups():
    specs = parameter_specs()
    names = [s.name for s in specs]
    assert len(names) == len(set(names)) > 60
    assert all(len(s.help) > 10 for s in specs), [s.name for s in specs if len(s.help) <= 10]
    for _, group in GROUPS:
        group()  # the defaults pass their own checks


@pytest.mark.parametrize("cls, name, bad", [
    (MapperConfig, "lr_means", 0.0), (MapperConfig, "lr_sh0", -1.0), (MapperConfig, "prune_opacity", 5.0),
    (MapperConfig, "kf_translation_m", -5.0), (MapperConfig, "window_size", 0), (MapperConfig, "grow_alpha", 1.5),
    (MapperConfig, "backend", "vulkan"), (MapperConfig, "initial_opacity", 1.0),
    (SemanticTrainingConfig, "sem_dim", 0), (SemanticTrainingConfig, "sem_dim", -3),
    (SemanticTrainingConfig, "dcs_confidence", 1.2), (SemanticTrainingConfig, "lr_decoder", 0.0),
    (SemanticTrainingConfig, "sem_tau", 0.0), (NodeSettings, "render_rate_hz", -1.0),
])
def test_out_of_range_values_are_rejected_with_the_setting_name(cls, name, bad):
    with pytest.raises(SettingsError, match=f"setting {name} must be"):
        cls(**{name: bad})


def test_every_numeric_setting_has_a_range_check():
    unchecked = [f"{cls.__name__}.{f.name}" for _, cls in GROUPS for f in fields(cls)
                 if type(f.default) in (int, float) and f.metadata.get("check") is None]
    assert unchecked == ["MapperConfig.seed"]  # any integer seed is fine


def test_values_are_coerced_or_rejected_by_name():
    assert coerce("x", float, 2) == 2.0 and isinstance(coerce("x", float, 2), float)
    assert coerce("x", int, 3.0) == 3 and coerce("x", int, " 12 ") == 12 and coerce("x", bool, "true") is True
    for kind, value, expected in ((int, "lots", "an integer"), (int, 2.7, "an integer"), (int, True, "an integer"),
                                  (float, "fast", "a number"), (float, float("nan"), "a finite number"),
                                  (str, None, "a string"), (str, [1, 2], "a string"), (bool, 1, "true or false")):
        with pytest.raises(SettingsError, match=f"setting x: expected {expected}"):
            coerce("x", kind, value)
    with pytest.raises(SettingsError, match="setting max_gaussians: expected an integer, got 'lots'"):
        Parameters.from_flat({"max_gaussians": "lots"})
    assert Parameters.from_flat({"max_gaussians": "5000"}).mapper.max_gaussians == 5000


def test_parameters_split_flat_values_into_groups_and_reject_typos(tmp_path):
    p = Parameters.from_flat({**DEFAULTS, "iters_per_keyframe": 3, "render_rate_hz": 1, "sem_dim": 8,
                              "clip_model": "clipgs-tiny"})
    assert p.mapper.iters_per_keyframe == 3 and p.node.render_rate_hz == 1.0 and p.stream.map_frame == "map"
    assert p.training.sem_dim == 8 and p.semantics.clip_model == "clipgs-tiny"
    with pytest.raises(SettingsError, match=r"unknown parameter\(s\) \['colour_topic'\]"):
        Parameters.from_flat({"colour_topic": "/x"})
    flat = tmp_path / "flat.yaml"
    flat.write_text("iters_per_keyframe: 4\ndcs_every: 0\n")
    assert Parameters.from_yaml(flat).training.dcs_every == 0
    ros = tmp_path / "ros.yaml"
    ros.write_text(yaml.safe_dump({"clipgs_mapping": {"ros__parameters": {"window_size": 3, "map_frame": "odom"}}}))
    loaded = Parameters.from_yaml(ros)
    assert loaded.mapper.window_size == 3 and loaded.stream.map_frame == "odom"
    assert Parameters.from_yaml(None) == Parameters()


def test_command_line_overrides_go_to_the_group_that_has_the_setting():
    mapping, training = split_overrides(["iters_per_keyframe=10", "dcs_every=0", "lr_means=1e-3"],
                                        (MapperConfig, SemanticTrainingConfig))
    assert mapping == {"iters_per_keyframe": "10", "lr_means": "1e-3"} and training == {"dcs_every": "0"}
    assert MapperConfig(**mapping).iters_per_keyframe == 10  # the settings coerce the strings
    for bad in ("iters_per_kf=10", "dcs_every"):
        with pytest.raises(SettingsError, match="expected NAME=VALUE with NAME a MapperConfig or SemanticTraining"):
            split_overrides([bad], (MapperConfig, SemanticTrainingConfig))


@pytest.mark.parametrize("content, expected", [
    ("a: [1, 2\n", "not valid YAML"), ("- 1\n- 2\n", "expected a mapping"), ("42\n", "expected a mapping"),
    ("clipgs_mapping: 3\n", "expected a mapping"),
])
def test_bad_settings_files_get_one_clear_error(tmp_path, content, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(SettingsError, match=expected):
        Parameters.from_yaml(path)
    with pytest.raises(SettingsError, match="no such settings file"):
        Parameters.from_yaml(tmp_path)  # a folder


def test_cli_choices_come_from_the_registries():
    from clipgs.cli import build_parser
    from clipgs.render import BACKENDS
    from clipgs.semantics.factory import SOURCES

    sub = build_parser()._subparsers._group_actions[0].choices
    for command in ("eval", "render"):
        backend = next(a for a in sub[command]._actions if a.dest == "backend")
        assert tuple(backend.choices) == BACKENDS
    semantics = next(a for a in sub["map"]._actions if a.dest == "semantics")
    assert list(semantics.choices) == [*SOURCES, "simulated"]


def test_cli_params_writes_the_params_file(tmp_path, capsys):
    from clipgs.cli import main

    assert main(["params", "--out", str(tmp_path / "p.yaml")]) == 0
    assert (tmp_path / "p.yaml").read_text() == params_file_text()
    assert main(["map", str(tmp_path), "--out", str(tmp_path / "m.ply"), "--config", str(tmp_path / "none.yaml")]) == 2
    assert "no such settings file" in capsys.readouterr().err
