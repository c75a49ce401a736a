"""Packaging: package.xml is a valid ROS 2 manifest and the one setup.py builds under colcon (ament_python)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_package_xml_is_format3_ament_python():
    tree = ET.parse(ROOT / "package.xml")
    pkg = tree.getroot()
    assert pkg.tag == "package" and pkg.get("format") == "3"
    assert pkg.findtext("name") == "clipgs_ros"
    assert pkg.find("export/build_type").text == "ament_python"
    assert (ROOT / "resource" / "clipgs_ros").is_file()
    try:
        from catkin_pkg.package import parse_package  # strict validation, as colcon does
    except ImportError:
        return
    assert parse_package(str(ROOT / "package.xml")).name == "clipgs_ros"


def test_setup_py_version_matches_package_xml():
    version = ET.parse(ROOT / "package.xml").getroot().findtext("version")
    out = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == version


@pytest.mark.skipif(shutil.which("colcon") is None, reason="colcon not installed (Debian: colcon python3-colcon-ros)")
def test_colcon_build_installs_the_package(tmp_path):
    src = tmp_path / "src" / "clipgs"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "demo_out", "build", "install", "log",
                                                               "__pycache__", "*.egg-info", ".pytest_cache"))
    out = subprocess.run(["colcon", "build", "--base-paths", "src"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    install = tmp_path / "install" / "clipgs_ros"
    assert (install / "lib" / "clipgs_ros" / "clipgs").is_file()  # where ros2 run looks for executables
    assert (install / "share" / "clipgs_ros" / "package.xml").is_file()
    assert (install / "lib" / "clipgs_ros" / "mapping_node").is_file()  # ros2 launch finds the node here
    for f in ("launch/mapping.launch.py", "config/mapping.yaml", "config/clipgs.rviz"):
        assert (install / "share" / "clipgs_ros" / f).is_file(), f
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "clipgs_ros").is_file()
    assert list(install.glob("lib/python3*/site-packages/clipgs/render/api.py"))
    assert list(install.glob("lib/python3*/site-packages/clipgs/render/csrc/rasterize_cpu.cpp"))
