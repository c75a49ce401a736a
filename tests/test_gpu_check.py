"""benchmarks/gpu_check.py (``make gpu-check``): its CPU side. On a machine without CUDA it exits 0 at once;
its checks run here with CPU backends so a GPU run does not die on a bug that a CPU could show."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: make gpu-check runs for real")
def test_without_cuda_it_says_so_and_exits_0(gpu_check, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["gpu_check.py"])
    t0 = time.perf_counter()
    assert gpu_check.main() == 0
    assert "no CUDA GPU" in capsys.readouterr().out and time.perf_counter() - t0 < 10


def test_agreement_and_speed_rows_on_cpu_backends(gpu_check):
    rows = gpu_check.agreement([("torch", "cpu"), ("cpu_scalar", "cpu")], seeds=(0,), n=600, size=(48, 32))
    assert len(rows) == 2 and all(r["ok"] for r in rows)
    assert all(r[k] < 1e-2 for r in rows for k in gpu_check.GRAD_NAMES)
    speed = gpu_check.render_speed([1500], "cpu", "cpu", size=(64, 48), repeats=1)
    assert speed[0]["n"] == 1500 and speed[0]["fps"] > 0 and speed[0]["fwd_bwd_ms"] > 0


def test_room_end_to_end_checks_run_on_the_cpu(gpu_check, tmp_path):
    room = gpu_check.map_room("cpu", frames=12, out=tmp_path, size=(80, 60), dcs_start=2, dcs_every=1)
    assert room["keyframes"] >= 2 and room["gaussians"] > 0 and room["psnr_db"] > 15
    assert 0 <= room["map_miou"] <= 1 and room["query_objects"] >= 0
    assert (tmp_path / "gpu_check_map.ply").is_file() and (tmp_path / "gpu_check_map.semantics.pt").is_file()
