"""The rclpy node, checked without a ROS install: static API check, ROS linters, launch/config files."""
from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NODE = ROOT / "clipgs_ros" / "mapping_node.py"
MYPY_CONFIG = """[mypy]
ignore_missing_imports = True
follow_untyped_imports = True
check_untyped_defs = True
"""


def _mypy(tmp_path: Path, source: str):
    (tmp_path / "mapping_node.py").write_text(source)
    (tmp_path / "mypy.ini").write_text(MYPY_CONFIG)
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--no-incremental",
                           "mapping_node.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None or importlib.util.find_spec("rclpy") is None,
                    reason="needs mypy and rclpy(-intellisense) sources")
def test_node_calls_the_real_rclpy_api(tmp_path):
    """mypy against rclpy's own Python sources: wrong names or keywords of rclpy calls fail here."""
    source = NODE.read_text()
    ok = _mypy(tmp_path, source)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = _mypy(tmp_path, source.replace("callback_group=services)", "callback_groups=services)"))
    assert broken.returncode != 0 and 'Unexpected keyword argument "callback_groups"' in broken.stdout


def test_node_is_thin_and_rclpy_stays_in_clipgs_ros():
    tree = ast.parse(NODE.read_text())
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert [c.name for c in classes] == ["MappingNode"] and len(NODE.read_text().splitlines()) < 260
    for path in (ROOT / "clipgs").rglob("*.py"):
        text = path.read_text()
        assert "import rclpy" not in text and "from rclpy" not in text, path


def test_node_declares_every_parameter_of_the_params_file():
    from clipgs.parameters import parameter_specs

    source = (ROOT / "clipgs_ros" / "node_parameters.py").read_text()
    assert "for spec in parameter_specs()" in source and "ParameterDescriptor(" in source
    assert "description=spec.help, additional_constraints=spec.constraints" in source
    assert "declare_settings(self)" in NODE.read_text()
    launch = (ROOT / "launch" / "mapping.launch.py").read_text()
    calls = [n for n in ast.walk(ast.parse(launch)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    declared = [c.args[0].value for c in calls if c.func.id == "DeclareLaunchArgument"
                and isinstance(c.args[0], ast.Constant)]
    assert declared == ["params_file", "use_sim_time", "rviz"]
    overrides = next(n.value for n in ast.walk(ast.parse(launch)) if isinstance(n, ast.Assign)
                     and getattr(n.targets[0], "id", "") == "OVERRIDES")
    names = [k.value for k in overrides.keys]
    assert set(names) >= {"semantic_source", "clip_model", "clip_weights", "sam_weights", "vocabulary", "color_topic",
                          "depth_topic", "camera_info_topic", "map_frame", "pose_topic", "autosave_path"}
    assert set(names) <= {spec.name for spec in parameter_specs()}  # each sets a real node parameter
    assert "shutil.which('rviz2') is None" in launch  # rviz:=true without rviz2: a message, no failed launch
    executables = [kw.value.value for c in calls if c.func.id == "Node" for kw in c.keywords
                   if kw.arg == "executable"]
    assert executables == ["mapping_node", "rviz2"]
    assert "sigterm_timeout=str(int(timeout))" in launch and "timeout = shutdown_timeout_s(params_file)" in launch
    assert "mapping_node = clipgs_ros.mapping_node:main" in (ROOT / "setup.py").read_text()
    assert "mapping.yaml" in launch and "clipgs.rviz" in launch and len(parameter_specs()) > 40


def test_the_launch_file_gives_the_node_its_finishing_budget_before_sigterm(tmp_path):
    from clipgs.parameters import shutdown_timeout_s

    shipped = shutdown_timeout_s(ROOT / "config" / "mapping.yaml")
    assert shipped == 60.0  # finish_budget_s 40 + 20 s for the frame in hand and the save
    longer = tmp_path / "long.yaml"
    longer.write_text("clipgs_mapping:\n  ros__parameters:\n    finish_budget_s: 100.0\n")
    assert shutdown_timeout_s(longer) == 120.0
    (tmp_path / "broken.yaml").write_text("clipgs_mapping: [")
    assert shutdown_timeout_s(tmp_path / "broken.yaml") == shutdown_timeout_s(tmp_path / "missing.yaml") == 60.0


def _real_rclpy() -> bool:
    try:
        import rclpy  # noqa: F401  (rclpy-intellisense alone cannot import: no C extension, no messages)
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _real_rclpy(), reason="no ROS 2 install here (rclpy sources only, for the static check)")
def test_node_imports_with_real_rclpy():
    import clipgs_ros.mapping_node  # noqa: F401


@pytest.mark.parametrize("tool", ["ament_flake8", "ament_pep257", "ament_xmllint"])
def test_ros_linters(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (Debian: python3-{tool.replace('_', '-')})")
    targets = {"ament_flake8": ["clipgs_ros", "launch"], "ament_pep257": ["clipgs_ros", "launch"],
               "ament_xmllint": ["package.xml", "clipgs_interfaces/package.xml"]}[tool]
    out = subprocess.run([tool, *targets], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_service_definitions_parse_with_rosidl():
    parser = "/usr/bin/python3" if Path("/usr/bin/python3").is_file() else shutil.which("python3")
    probe = subprocess.run([parser, "-c", "import rosidl_adapter.parser"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("rosidl parser not installed (Debian: python3-rosidl)")
    code = ("from rosidl_adapter.parser import parse_service_file as p\n"
            "q = p('clipgs_interfaces', 'clipgs_interfaces/srv/QueryObject.srv')\n"
            "s = p('clipgs_interfaces', 'clipgs_interfaces/srv/SaveMap.srv')\n"
            "print([f.name for f in q.request.fields], [f.name for f in q.response.fields],"
            " [f.name for f in s.request.fields])")
    out = subprocess.run([parser, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("['label', 'use_viewpoint', 'viewpoint'] ['success', 'message', 'mask', "
                                  "'relevancy', 'score', 'centroid', 'box_min', 'box_max', 'object_centroids', "
                                  "'object_box_min', 'object_box_max'] ['path']")
