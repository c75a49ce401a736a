"""Nothing lost on bad input: a bad file costs one frame, a bad output path costs nothing, Ctrl-C keeps the map."""
from __future__ import annotations

import shutil

from clipgs.cli import main
from clipgs.data.dataset import open_dataset
from clipgs.mapping import load_ply
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.offline import map_frames

FAST = MapperConfig(iters_per_keyframe=2, w_ssim=0.0)


def test_map_skips_unreadable_frames_and_keeps_going(synth_dir, tmp_path, capsys, caplog):
    data = shutil.copytree(synth_dir, tmp_path / "data")
    (data / "rgb" / "rgb_7.png").write_bytes((data / "rgb" / "rgb_7.png").read_bytes()[:100])  # truncated
    (data / "depth" / "depth_12.png").unlink()  # missing
    cfg = tmp_path / "fast.yaml"
    cfg.write_text("iters_per_keyframe: 2\nw_ssim: 0.0\n")
    assert main(["map", str(data), "--out", str(tmp_path / "m.ply"), "--config", str(cfg), "--max-frames", "14"]) == 0
    out = capsys.readouterr()
    assert "unreadable (OSError): 1" in out.out and "unreadable (FileNotFoundError): 1" in out.out
    assert "mapped 12 frames" in out.out and len(load_ply(tmp_path / "m.ply")) > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("frame 7 of" in w for w in warnings) == 1 and sum("frame 12 of" in w for w in warnings) == 1
    assert all("\n" not in w for w in warnings) and "Traceback" not in out.err  # one line each


def test_a_bad_output_path_fails_before_mapping(synth_dir, tmp_path, capsys):
    assert main(["map", str(synth_dir), "--out", str(tmp_path)]) == 2
    assert main(["map", str(synth_dir), "--out", "/proc/clipgs/m.ply"]) == 2
    out = capsys.readouterr()
    assert "is a folder" in out.err and "cannot create" in out.err and "mapped" not in out.out


def test_ctrl_c_keeps_what_was_mapped(synth_dir):
    ds = open_dataset(synth_dir)

    def frames():
        for k, i in enumerate(ds.train_indices):
            if k == 3:
                raise KeyboardInterrupt
            yield ds[i]

    mapper, summary = map_frames(frames(), FAST, progress=False)
    assert summary["interrupted"] and summary["frames"] == 3 and len(mapper.snapshot().gaussians) > 0


def test_one_future_stamp_does_not_stop_the_mapper_for_good(synth_dir):
    """A stamp far ahead (a glitch), then the stream goes on at its own clock: after a small step back is
    rejected as stale, the next frames are a clock reset and map again; a bag loop likewise."""
    import dataclasses

    from clipgs.mapping.mapper import IncrementalMapper

    ds = open_dataset(synth_dir)
    mapper = IncrementalMapper(dataclasses.replace(FAST, kf_translation_m=0.0))
    frames = [ds[i] for i in ds.train_indices[:6]]
    stamps = [10.0, 10.1, 5000.0, 10.3, 10.4, 9.5]  # a glitch ahead, back to normal, then a stale frame
    outcomes = [mapper.add_frame(dataclasses.replace(f, timestamp=t)) for f, t in zip(frames, stamps)]
    assert outcomes[3] != "rejected:timestamp_backwards" and outcomes[4] != "rejected:timestamp_backwards"
    assert outcomes[5] == "rejected:timestamp_backwards"  # 0.9 s behind: stale, not a reset
    assert mapper.stats.clock_resets == 1 and mapper.stats.rejected["timestamp_backwards"] == 1


def test_a_stale_or_foreign_semantic_model_is_refused_with_the_reason(tmp_path, capsys):
    import pytest
    import torch

    from clipgs.errors import MapFileError
    from clipgs.mapping import GaussianMap, save_ply
    from clipgs.semantics.model import SemanticModel, load_semantics, save_semantics
    from clipgs.semantics.sac import SemanticDecoder

    g = torch.Generator().manual_seed(0)

    def gmap(n: int, d: int) -> GaussianMap:
        return GaussianMap(*(torch.randn(n, k, generator=g) for k in (3, 4, 3)), torch.randn(n, generator=g),
                           torch.randn(n, 3, generator=g), torch.randn(n, d, generator=g))

    def model(d: int) -> SemanticModel:
        return SemanticModel(SemanticDecoder(d, 8), {"model": "clipgs-tiny"}, ["void", "chair"], torch.randn(2, 8))

    path = save_ply(gmap(50, 4), tmp_path / "m.ply")
    save_semantics(model(4), path)
    assert load_semantics(path, load_ply(path)).decoder.sem_dim == 4
    save_ply(gmap(60, 4), path)  # re-mapped: the model beside it is stale
    with pytest.raises(MapFileError, match=r"another version of m\.ply"):
        load_semantics(path)
    assert main(["query", str(path), "chair"]) == 2
    assert "another version" in capsys.readouterr().err
    save_semantics(model(6), path)  # the right file, the wrong width
    with pytest.raises(MapFileError, match="decodes 6 attributes"):
        load_semantics(path, load_ply(path))


def test_garbage_weights_are_one_line_and_exit_2(synth_dir, tmp_path, capsys):
    garbage = tmp_path / "weights.pt"
    garbage.write_text("not a checkpoint")
    code = main(["map", str(synth_dir), "--out", str(tmp_path / "m.ply"), "--semantics", "clip_fast",
                 "--text-model", "clipgs-tiny", "--clip-weights", str(garbage), "--max-frames", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("clipgs map: error:") and "not an open_clip clipgs-tiny checkpoint" in err
    assert not (tmp_path / "m.ply").exists()
    assert main(["--debug", "map", str(synth_dir), "--out", str(tmp_path / "m.ply"), "--semantics", "clip_fast",
                 "--clip-weights", str(garbage), "--max-frames", "1"]) == 2
    assert "Traceback" in capsys.readouterr().err  # --debug shows where


def test_a_bug_says_so_with_the_traceback(synth_dir, monkeypatch, capsys):
    from clipgs.cli import data_commands

    def broken(args):
        raise RuntimeError("an internal invariant broke")

    monkeypatch.setattr(data_commands, "run_info", broken)
    assert main(["info", str(synth_dir)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "clipgs info: bug: unexpected RuntimeError (an internal invariant broke)" in err


def test_silent_nonsense_is_refused(synth_dir, tmp_path, capsys):
    import numpy as np
    import pytest

    from clipgs.data.frame import FrameError
    from clipgs.data.images import write_image

    with pytest.raises(SystemExit):  # argparse: one usage line, exit 2
        main(["map", str(synth_dir), "--out", str(tmp_path / "m.ply"), "--max-frames", "0"])
    with pytest.raises(SystemExit):
        main(["render", str(tmp_path / "m.ply"), str(synth_dir), "--view", "-1", "--out", str(tmp_path / "r")])
    before = sorted(p.name for p in synth_dir.iterdir())
    assert main(["synth", "--out", str(synth_dir), "--frames", "2"]) == 2  # onto an existing dataset
    assert sorted(p.name for p in synth_dir.iterdir()) == before and "nothing was written" in capsys.readouterr().err
    data = shutil.copytree(synth_dir, tmp_path / "data")
    write_image(data / "depth" / "depth_3.png", np.full((60, 80), 200, np.uint8))  # an 8-bit image as depth
    with pytest.raises(FrameError, match="8-bit image is not depth"):
        open_dataset(data)[3]


def test_a_pose_jump_is_rejected_and_a_relocalised_robot_maps_again(synth_dir):
    import dataclasses

    from clipgs.mapping.mapper import IncrementalMapper

    ds = open_dataset(synth_dir)
    mapper = IncrementalMapper(dataclasses.replace(FAST, kf_translation_m=0.0))
    frames = [ds[i] for i in ds.train_indices[:8]]

    def moved(frame, metres: float):
        T = frame.world_from_camera.copy()
        T[0, 3] += metres
        return dataclasses.replace(frame, world_from_camera=T)

    outcomes = [mapper.add_frame(f) for f in frames[:2]]  # 1 s apart (frame index stamps): 5 m allowed
    outcomes.append(mapper.add_frame(moved(frames[2], 100.0)))  # an odometry glitch
    outcomes.append(mapper.add_frame(frames[3]))  # back on track: accepted
    outcomes += [mapper.add_frame(moved(f, 100.0)) for f in frames[4:8]]  # relocalised 100 m away, consistently
    assert outcomes[2] == "rejected:pose_jump" and outcomes[3] != "rejected:pose_jump"
    assert outcomes[4:6] == ["rejected:pose_jump"] * 2 and outcomes[6] != "rejected:pose_jump"
    assert outcomes[7] != "rejected:pose_jump"  # the new reference holds
    assert mapper.stats.rejected["pose_jump"] == 3 and mapper.stats.relocalisations == 1
    off = IncrementalMapper(dataclasses.replace(FAST, kf_translation_m=0.0, max_speed_mps=0.0))
    assert [off.add_frame(f) for f in (frames[0], moved(frames[1], 100.0))][1] != "rejected:pose_jump"


def test_pose_jump_gate_uses_time_and_restarts_after_a_clock_reset():
    import numpy as np

    from clipgs.mapping.frame_check import PoseJumpGate

    gate = PoseJumpGate(max_speed_mps=2.0)
    assert gate.accept(np.zeros(3), 0.0)
    assert gate.accept(np.array([0.15, 0, 0]), 0.0)  # a duplicate stamp: 0.1 s floor, 0.2 m allowed
    assert not gate.accept(np.array([3.0, 0, 0]), 1.0)  # 2.85 m in 1 s
    assert gate.accept(np.array([1.9, 0, 0]), 1.0)  # 1.75 m in 1 s from the last accepted
    assert gate.accept(np.array([50.0, 0, 0]), -100.0)  # time went back: a reset, the check restarts


def test_malformed_message_objects_are_message_errors():
    import types

    import numpy as np
    import pytest

    from clipgs.data import ros_messages as rm
    from clipgs.errors import MessageError

    for fn, msg in [(rm.rgb_from_image, object()), (rm.depth_from_image, types.SimpleNamespace(encoding=3)),
                    (rm.intrinsics_from_camera_info, types.SimpleNamespace(k=None, width=1, height=1)),
                    (rm.matrix_from_pose, types.SimpleNamespace(position=None)),
                    (rm.stamp_to_seconds, "12:00")]:
        with pytest.raises(MessageError, match=f"malformed message for {fn.__name__}|unsupported"):
            fn(msg)
    q = types.SimpleNamespace(w=1e200, x=0.0, y=0.0, z=0.0)
    pose = types.SimpleNamespace(position=types.SimpleNamespace(x=1.0, y=2.0, z=3.0), orientation=q)
    T = rm.matrix_from_pose(pose)  # a huge but finite quaternion is still a direction: no NaN
    assert np.allclose(T[:3, :3], np.eye(3)) and np.allclose(T[:3, 3], [1, 2, 3])
    depth = types.SimpleNamespace(encoding="16UC1", width=2, height=1, step=4, is_bigendian=0,
                                  data=np.array([1, 0, 2, 0], np.uint8).tobytes())
    with pytest.raises(MessageError, match="depth_scale must be a positive"):
        rm.depth_from_image(depth, -1.0)


def test_library_edges_raise_clear_errors(synth_dir):
    import numpy as np
    import pytest

    from clipgs.data.frame import Camera, FrameError
    from clipgs.data.replica import ReplicaDataset
    from clipgs.data.ros_stream import FrameAssembler
    from clipgs.geometry import quat_to_rotmat

    K = np.array([[50.0, 0, 40], [0, 50, 30], [0, 0, 0]])
    with pytest.raises(FrameError, match=r"last row \(0, 0, 1\)"):
        Camera(K, 80, 60)
    with pytest.raises(ValueError, match="depth_scale must be a positive"):
        ReplicaDataset(synth_dir, depth_scale=-1)
    with pytest.raises(ValueError, match="depth_scale must be a positive"):
        FrameAssembler(depth_scale=0.0)
    assert np.allclose(quat_to_rotmat(np.array([1e200, 0, 0, 0])), np.eye(3))


def test_a_rejected_frame_never_becomes_the_query_camera(synth_dir):
    import dataclasses
    import time

    import numpy as np

    from clipgs.data.frame import Frame
    from clipgs.mapping.mapper import IncrementalMapper

    ds = open_dataset(synth_dir)
    mapper = IncrementalMapper(dataclasses.replace(FAST, kf_translation_m=0.0))
    good = ds[ds.train_indices[0]]
    mapper.add_frame(good)
    tiny = Frame(np.zeros((1, 1, 3), np.uint8), np.ones((1, 1), np.float32), good.K, good.world_from_camera,
                 timestamp=time.time())
    assert mapper.add_frame(tiny) == "rejected:wrong_size"
    assert mapper.last_input_camera.width == good.width and mapper.last_input_camera.height == good.height


def test_strict_stops_at_an_unreadable_frame_and_a_plain_map_removes_a_stale_model(synth_dir, tmp_path, capsys):
    data = shutil.copytree(synth_dir, tmp_path / "data")
    (data / "depth" / "depth_2.png").unlink()
    cfg = tmp_path / "fast.yaml"
    cfg.write_text("iters_per_keyframe: 2\nw_ssim: 0.0\n")
    out = tmp_path / "m.ply"
    assert main(["map", str(data), "--out", str(out), "--config", str(cfg), "--max-frames", "4", "--strict"]) == 2
    assert "frame 2 of" in capsys.readouterr().err and not out.exists()
    (tmp_path / "m.semantics.pt").write_bytes(b"a model of an older map")
    assert main(["map", str(data), "--out", str(out), "--config", str(cfg), "--max-frames", "4"]) == 0
    assert "removed the old m.semantics.pt" in capsys.readouterr().out
    assert out.is_file() and not (tmp_path / "m.semantics.pt").exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_a_query_too_long_for_clip_is_refused_not_cut(tmp_path, capsys):
    import torch

    from clipgs.mapping import GaussianMap, save_ply
    from clipgs.semantics.model import SemanticModel, save_semantics
    from clipgs.semantics.sac import SemanticDecoder
    from clipgs.semantics.text import TextEncoder

    text = TextEncoder("clipgs-tiny")
    n = 20
    g = GaussianMap(torch.randn(n, 3), torch.randn(n, 4), torch.full((n, 3), -3.0), torch.ones(n),
                    torch.zeros(n, 3), torch.randn(n, 4))
    path = save_ply(g, tmp_path / "m.ply")
    vocab = torch.cat([torch.zeros(1, 64), text.encode(["chair"])])
    save_semantics(SemanticModel(SemanticDecoder(4, 64), text.identity, ["void", "chair"], vocab), path)
    assert main(["query", str(path), "chair " * 2000]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "reads at most 77" in err


def test_synth_overwrite_replaces_only_its_own_dataset(tmp_path, capsys):
    out = tmp_path / "room"
    assert main(["synth", "--out", str(out), "--frames", "2", "--width", "32", "--height", "24"]) == 0
    assert main(["synth", "--out", str(out), "--frames", "3", "--width", "32", "--height", "24"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["synth", "--out", str(out), "--frames", "3", "--width", "32", "--height", "24", "--overwrite"]) == 0
    assert len(open_dataset(out)) == 3
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"precious")
    assert main(["synth", "--out", str(other), "--frames", "2", "--overwrite"]) == 2
    assert (other / "holiday.jpg").read_bytes() == b"precious" and "scene.json" in capsys.readouterr().err


def test_one_negatives_default_for_cli_viewer_and_node():
    from clipgs.semantics.query import CANONICAL_NEGATIVES, negative_names

    assert negative_names(["void", "chair", "table", "sofa"], " Chair ") == ["table", "sofa"]
    assert negative_names(["void", "chair"], "chair") == list(CANONICAL_NEGATIVES)  # nothing else to contrast
    assert negative_names(["void", "chair", "table"], "chair", "canonical") == list(CANONICAL_NEGATIVES)
