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


def test_an_unexpected_failure_is_one_line_and_exit_1(synth_dir, tmp_path, capsys):
    garbage = tmp_path / "weights.pt"
    garbage.write_text("not a checkpoint")
    code = main(["map", str(synth_dir), "--out", str(tmp_path / "m.ply"), "--semantics", "clip_fast",
                 "--text-model", "clipgs-tiny", "--clip-weights", str(garbage), "--max-frames", "1"])
    err = capsys.readouterr().err.strip()
    assert code in (1, 2) and len(err.splitlines()) == 1 and err.startswith("clipgs map: error:")
    assert "Traceback" not in err


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
