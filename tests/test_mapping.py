"""Online mapping: growth, gating, the drop-when-busy worker, pruning, optimiser state, config, bad input."""
from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
import torch
import yaml

from clipgs.data.dataset import open_dataset
from clipgs.data.frame import Camera
from clipgs.eval.metrics import psnr
from clipgs.mapping import ChannelTrainer, GaussianMap
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.keyframes import KeyframeGate
from clipgs.mapping.mapper import IncrementalMapper
from clipgs.mapping.trainable_map import TrainableMap
from clipgs.mapping.worker import MapperWorker

FAST = dict(iters_per_keyframe=10, w_ssim=0.0)


def test_first_keyframe_is_rendered_back(synth_dir):
    ds = open_dataset(synth_dir)
    mapper = IncrementalMapper(MapperConfig(**FAST))
    frame = ds[0]
    assert mapper.add_frame(frame) == "keyframe"
    out = mapper.snapshot().gaussians.render(frame.camera, semantic=False)
    assert psnr(out.image.clamp(0, 1).numpy(), frame.rgb / 255.0) > 20.0
    assert mapper.stats.iterations == 10 and mapper.stats.added == 80 * 60


def test_growth_adds_only_where_the_map_is_missing(synth_dir):
    ds = open_dataset(synth_dir)
    mapper = IncrementalMapper(MapperConfig(iters_per_keyframe=1, w_ssim=0.0))
    mapper.add_frame(ds[0])
    first = mapper.gaussian_count
    mapper.add_frame(ds[1])  # 15 degrees further: mostly seen already, a new strip at the border
    added = mapper.stats.added - 80 * 60
    assert mapper.stats.keyframes == 2 and 0 < added < 0.6 * 80 * 60
    assert mapper.gaussian_count <= first + added


def test_keyframe_gate_by_motion_and_overlap(synth_dir):
    ds = open_dataset(synth_dir)
    f = ds[0]
    gate = KeyframeGate(translation_m=0.2, rotation_deg=10.0, min_overlap=0.8)
    assert gate.is_keyframe(f)
    gate.accept(f)
    assert not gate.is_keyframe(f)  # same view again
    moved = dataclasses.replace(f, world_from_camera=f.world_from_camera.copy())
    moved.world_from_camera[:3, 3] += [0.25, 0, 0]
    assert gate.is_keyframe(moved)
    small = dataclasses.replace(f, world_from_camera=f.world_from_camera.copy())
    small.world_from_camera[:3, 3] += [0.05, 0, 0]
    assert not gate.is_keyframe(small)
    turned = ds[1]  # 15 degrees round the orbit
    assert gate.is_keyframe(turned)
    # Overlap alone: a high motion threshold, but the view content changed (depth mostly different).
    gate2 = KeyframeGate(translation_m=10.0, rotation_deg=180.0, min_overlap=0.8)
    gate2.accept(f)
    changed = dataclasses.replace(f, depth=f.depth * 0.5)
    assert gate2.is_keyframe(changed) and not gate2.is_keyframe(f)


class BlockingMapper:
    """Stands in for IncrementalMapper: prepare passes every frame on at once (or rejects 'bad'), integrate
    blocks until released, so 'busy' is under test control."""

    def __init__(self):
        self.started, self.release, self.seen, self.prepared = threading.Event(), threading.Event(), [], []
        self.trainer = ChannelTrainer()

    def prepare(self, frame):
        self.prepared.append(frame)
        return "rejected:bad" if frame == "bad" else ("prepared", frame)

    def integrate(self, prepared):
        self.seen.append(prepared[1])
        self.started.set()
        assert self.release.wait(10)
        return "keyframe"

    def snapshot(self):
        return GaussianMap.empty()


def test_worker_drops_frames_that_arrive_while_busy():
    mapper = BlockingMapper()
    worker = MapperWorker(mapper)
    assert worker.submit("a")
    assert mapper.started.wait(10)  # 'a' is being mapped
    for name in "bcd":  # each is prepared (pose tracking sees every frame), then waits in the map slot of one
        worker.submit(name)
        deadline = time.monotonic() + 10
        while mapper.prepared[-1:] != [name] and time.monotonic() < deadline:
            time.sleep(0.001)
    worker.submit("bad")  # rejected by prepare: finished without reaching the map stage
    assert worker.busy and mapper.trainer.stream_behind()  # 'd' waits: the trainer's optional work may too
    mapper.release.set()
    assert worker.wait_idle(10) and not mapper.trainer.stream_behind()
    assert mapper.prepared == ["a", "b", "c", "d", "bad"] and mapper.seen == ["a", "d"]
    assert worker.dropped == 2 and worker.processed == 3  # 'b' and 'c' displaced by the newer prepared frames
    assert worker.outcomes == {"keyframe": 2, "rejected": 1}
    worker.stop(10)
    with pytest.raises(RuntimeError, match="stopped"):
        worker.submit("e")


def test_worker_keeps_running_after_a_mapper_error():
    class Flaky:
        def __init__(self):
            self.calls, self.trainer = 0, ChannelTrainer()

        def prepare(self, frame):
            self.calls += 1
            if frame == "bad":
                raise RuntimeError("boom")
            return [frame]

        def integrate(self, prepared):
            return "skipped"

    worker = MapperWorker(Flaky())
    worker.submit("bad")
    worker.wait_idle(10)
    worker.submit("good")
    worker.wait_idle(10)
    assert worker.outcomes == {"error": 1, "skipped": 1} and isinstance(worker.error, RuntimeError)
    worker.stop(10)


def test_worker_with_real_mapper_and_concurrent_snapshots(synth_dir):
    ds = open_dataset(synth_dir)
    worker = MapperWorker(IncrementalMapper(MapperConfig(iters_per_keyframe=3, w_ssim=0.0)))
    sizes = []
    for i in range(6):
        worker.submit(ds[i])
        sizes.append(len(worker.snapshot()))  # never blocks for a whole keyframe, never inconsistent
    worker.wait_idle(120)
    worker.stop(10)
    assert worker.processed + worker.dropped == 6 and worker.processed >= 1
    snap = worker.snapshot()
    assert len(snap) == worker.mapper.gaussian_count == snap.stats.gaussians > 0 and snap.decoder is None
    for t in snap.gaussians.tensors().values():
        assert not t.requires_grad


def test_pruning_and_cap_follow_optimiser_state(synth_dir):
    ds = open_dataset(synth_dir)
    mapper = IncrementalMapper(MapperConfig(iters_per_keyframe=1, w_ssim=0.0, max_gaussians=1000))
    mapper.add_frame(ds[0])
    assert mapper.stats.added == 1000 and 990 <= mapper.gaussian_count <= 1000  # the cap holds when adding
    before = mapper.gaussian_count
    state = mapper.map
    with torch.no_grad():
        state.gaussians.opacity_logits[:100] = -10.0  # transparent
        state.gaussians.log_scales[100:110] = np.log(1.0)  # 1 m: oversized
    marker = state._exp_avg["means"][200].clone()
    mapper.prune()
    assert mapper.gaussian_count == before - 110 and mapper.stats.pruned >= 110
    for k, p in state.gaussians.tensors().items():
        assert state._exp_avg[k].shape == p.shape == state._exp_avg_sq[k].shape and p.requires_grad and p.is_leaf, k
    assert state._steps.shape == (before - 110,)
    assert torch.equal(state._exp_avg["means"][90], marker)  # row 200 moved to 90 with its state


def test_transparent_gaussians_are_pruned_in_batches(synth_dir):
    """Removing rows copies the whole map: a few invisible Gaussians wait for a batch, oversized ones do not."""
    mapper = IncrementalMapper(MapperConfig(iters_per_keyframe=1, w_ssim=0.0, max_gaussians=1000))
    mapper.add_frame(open_dataset(synth_dir)[0])
    before = mapper.gaussian_count
    with torch.no_grad():
        mapper.map.gaussians.opacity_logits[:5] = -10.0  # 0.5 % of the map: below the batch
        mapper.map.gaussians.log_scales[5] = np.log(1.0)
    mapper.prune()
    assert mapper.gaussian_count == before - 1  # only the oversized one
    mapper.prune(batch=0.004)
    assert mapper.gaussian_count == before - 6
    with torch.no_grad():
        mapper.map.gaussians.opacity_logits[:3] = -10.0
    mapper.finish()  # the stream's end removes every one
    assert mapper.gaussian_count == before - 9


@pytest.mark.parametrize("fused", [True, False])
def test_adam_matches_torch_adam_and_new_rows_start_fresh(fused):
    g = torch.Generator().manual_seed(0)
    gmap = GaussianMap(torch.randn(5, 3, generator=g), torch.randn(5, 4, generator=g), torch.randn(5, 3, generator=g),
                       torch.randn(5, generator=g), torch.randn(5, 3, generator=g), torch.zeros(5, 0))
    original = gmap.means.clone()
    opt = TrainableMap(gmap, {"means": 0.1, "sh0": 0.1}, eps=1e-8, fused=fused)
    ref = gmap.means.clone().requires_grad_(True)
    torch_opt = torch.optim.Adam([ref], lr=0.1, eps=1e-8)
    target = torch.randn(5, 3, generator=g)
    for _ in range(5):
        opt.zero_grad()
        ((opt.gaussians.means - target) ** 2).sum().backward()
        opt.step()
        torch_opt.zero_grad()
        ((ref - target) ** 2).sum().backward()
        torch_opt.step()
    torch.testing.assert_close(opt.gaussians.means.detach(), ref.detach())
    assert torch.equal(gmap.means, original)  # the map it was made from is not moved
    opt.extend(gmap.select(torch.tensor([0])))
    assert opt._steps.tolist() == [5, 5, 5, 5, 5, 0] and len(opt) == 6
    before = opt.gaussians.means[5].detach().clone()
    opt.zero_grad()
    ((opt.gaussians.means - target[0]) ** 2).sum().backward()
    opt.step()
    # First step of a fresh row moves by lr (Adam's bias-corrected unit step), whatever the global step count.
    torch.testing.assert_close((opt.gaussians.means[5].detach() - before).abs(), torch.full((3,), 0.1), rtol=1e-4,
                               atol=1e-6)
    # only=...: other fields keep their values even with a gradient.
    sh0 = opt.gaussians.sh0.detach().clone()
    opt.zero_grad()
    (opt.gaussians.means.sum() + opt.gaussians.sh0.sum()).backward()
    opt.step(only={"means"})
    assert torch.equal(opt.gaussians.sh0.detach(), sh0)
    with pytest.raises(ValueError, match="semantic channels"):
        opt.extend(GaussianMap.empty(sem_dim=2))


def test_maybe_in_view_holds_every_gaussian_the_render_composites():
    from clipgs.geometry import intrinsics_from_hfov
    from clipgs.render import maybe_in_view, rasterize

    g = torch.Generator().manual_seed(5)
    n = 20000
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([12.0, 12.0, 12.0])
    log_scales = torch.empty(n, 3).uniform_(-6.0, -0.5, generator=g)
    logits = torch.empty(n).uniform_(-9.0, 3.0, generator=g)
    camera = Camera(intrinsics_from_hfov(64, 48, 70.0), 64, 48, np.eye(4))
    out = rasterize(means, torch.randn(n, 4, generator=g), log_scales, logits, torch.rand(n, 3, generator=g), camera)
    maybe = maybe_in_view(means, log_scales, logits, camera, backend="cpu")  # the compiled cull
    assert bool(maybe[out.visible].all())  # never drops one the render uses
    assert out.visible.sum() > 1000 and maybe.sum() < 0.5 * n  # and culls most of what it does not use
    reference = maybe_in_view(means, log_scales, logits, camera, backend="torch")
    assert (reference != maybe).sum() <= 2  # the same bound in PyTorch ops (float rounding at the edge aside)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("listed", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_adam_over_fields_matches_the_torch_step_and_leaves_other_rows(dtype, listed, masked):
    """One compiled pass over several fields (widths 1, 3, 4, 16 and 7) on listed map rows (a working set) or all
    rows, only where the mask says (the rows a render composited), rows at different step counts: the same as
    adam_step_torch on each field's stepping rows with their bias corrections, and the step counts advanced."""
    from clipgs.mapping.trainable_map import adam_fields_fused, adam_step_torch, bias_corrections

    g, n_map = torch.Generator().manual_seed(4), 1000
    rows = torch.tensor([0, 3, 4, 9, 517, 999, 640, 12]) if listed else None
    n = n_map if rows is None else len(rows)
    mask = torch.rand(n, generator=g) < 0.6 if masked else None
    steps = torch.randint(0, 50, (n_map,), generator=g).double()
    lrs = (0.01, 0.002, 0.05, 0.1, 0.003)
    fields = []
    for width, lr in zip((1, 3, 4, 16, 7), lrs, strict=True):
        shape = (n_map,) if width == 1 else (n_map, width)
        p, m = (torch.randn(shape, generator=g, dtype=dtype) for _ in range(2))
        v = torch.rand(shape, generator=g, dtype=dtype)
        fields.append((p, torch.randn((n, *shape[1:]), generator=g, dtype=dtype), m, v, lr))
    before = [[t.clone() for t in f[:4]] for f in fields]
    fused_steps = steps.clone()
    adam_fields_fused(fields, fused_steps, rows, mask, (0.9, 0.999), 1e-15)

    stepping = torch.arange(n) if mask is None else torch.nonzero(mask).squeeze(1)  # gradient rows that step
    at = stepping if rows is None else rows[stepping]  # their map rows
    ref_steps = steps.clone()
    ref_steps[at] += 1
    assert torch.equal(fused_steps, ref_steps)
    bias = bias_corrections(ref_steps[at], (0.9, 0.999), dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5  # float32: the kernel's fused multiply-adds round differently
    others = torch.ones(n_map, dtype=torch.bool)
    others[at] = False
    for (p, _, m, v, lr), (p0, grad, m0, v0) in zip(fields, before, strict=True):
        ref = [t[at].clone() for t in (p0, m0, v0)]
        adam_step_torch(ref[0], grad[stepping], ref[1], ref[2], bias, lr, (0.9, 0.999), 1e-15)
        for x, y, x0 in zip((p, m, v), ref, (p0, m0, v0), strict=True):
            torch.testing.assert_close(x[at], y, rtol=tol, atol=tol)
            assert torch.equal(x[others], x0[others]) and not torch.equal(x[at], x0[at])


@pytest.mark.parametrize("backend", ["auto", "torch"])  # the compiled cull, and the PyTorch one (GPU path)
def test_a_step_on_the_view_trains_only_the_gaussians_in_view(synth_dir, backend):
    """working_set(camera): the Gaussians the camera may see render the same image as the whole map; a step
    moves the rows the render touched and their Adam state only (selective Adam), nothing else."""
    ds = open_dataset(synth_dir)
    mapper = IncrementalMapper(MapperConfig(iters_per_keyframe=2, w_ssim=0.0, backend=backend))
    mapper.add_frame(ds[0])
    state, camera = mapper.map, ds[0].camera
    far = state.gaussians.detach().select(torch.arange(300))
    far.means = far.means + torch.tensor([0.0, 0.0, -50.0])  # behind the camera
    state.extend(far)
    work, rows = state.working_set(camera, backend)
    n = len(state)
    assert rows is not None and len(work) == len(rows) and int(rows.max()) < n - 300
    assert state.working_set(None)[1] is None and state.working_set(None)[0] is state.gaussians
    with torch.no_grad():
        full = state.gaussians.render(camera, semantic=False, backend=backend)
        part = work.render(camera, semantic=False, backend=backend)
    torch.testing.assert_close(part.image, full.image, rtol=0, atol=1e-6)
    torch.testing.assert_close(part.alpha, full.alpha, rtol=0, atol=1e-6)
    before = {k: v.detach().clone() for k, v in state.gaussians.tensors().items()}
    steps = state._steps.clone()
    out = work.render(camera, semantic=False, backend=backend)
    (out.image - torch.from_numpy(ds[0].rgb / 255.0).float()).abs().mean().backward()
    rendered = out.visible.clone()
    rendered[::3] = False  # as if the render had not composited these: they must not step
    state.step(None, rows, work, rendered)
    seen = torch.zeros(n, dtype=torch.bool)
    seen[rows[rendered]] = True
    assert torch.equal(state._steps[~seen], steps[~seen]) and torch.equal(state._steps[seen], steps[seen] + 1)
    for k, v in state.gaussians.tensors().items():
        assert torch.equal(v.detach()[~seen], before[k][~seen]), k
    assert not torch.equal(state.gaussians.means.detach()[seen], before["means"][seen])
    # The mapper's steps go through the working set, and keep mapping as well as before.
    assert mapper.add_frame(ds[1]) == "keyframe"
    means = state.gaussians.means.detach()
    assert torch.equal(means[means[:, 2] < -40], before["means"][n - 300:])  # never seen, never moved


def test_config_yaml_round_trip_and_ros_layout(tmp_path):
    cfg = MapperConfig(iters_per_keyframe=7, kf_rotation_deg=5.5, backend="torch")
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    assert MapperConfig.from_yaml(tmp_path / "m.yaml") == cfg
    ros = {"clipgs_mapping": {"ros__parameters": {"iters_per_keyframe": 9, "max_gaussians": 5000,
                                                   "color_topic": "/camera/color/image_raw"}}}
    (tmp_path / "ros.yaml").write_text(yaml.safe_dump(ros))
    loaded = MapperConfig.from_yaml(tmp_path / "ros.yaml", ignore_unknown=True)
    assert loaded.iters_per_keyframe == 9 and loaded.max_gaussians == 5000
    (tmp_path / "typo.yaml").write_text("iters_per_keyfrme: 3\n")
    with pytest.raises(ValueError, match="unknown MapperConfig setting"):
        MapperConfig.from_yaml(tmp_path / "typo.yaml")


def test_bad_frames_are_rejected_counted_and_never_crash(synth_dir):
    ds = open_dataset(synth_dir)
    mapper = IncrementalMapper(MapperConfig(iters_per_keyframe=1, w_ssim=0.0))
    good = ds[0]
    assert mapper.add_frame(good) == "keyframe"

    def variant(**changes):
        f = dataclasses.replace(good)
        for k, v in changes.items():
            object.__setattr__(f, k, v)  # bypass validation, as a buggy producer would
        return f

    no_depth = variant(depth=np.zeros_like(good.depth))
    nan_pose = variant(world_from_camera=np.full((4, 4), np.nan))
    skewed = good.world_from_camera.copy()
    skewed[:3, :3] *= 1.5
    non_rigid = variant(world_from_camera=skewed)
    small = dataclasses.replace(good, rgb=good.rgb[:30, :40], depth=good.depth[:30, :40], labels=None, instances=None)
    backwards = variant(timestamp=good.timestamp - 1.0)
    broken = variant(rgb=None)
    outcomes = [mapper.add_frame(f) for f in (no_depth, nan_pose, non_rigid, small, backwards, broken)]
    assert outcomes[:5] == ["rejected:no_valid_depth", "rejected:non_finite_pose", "rejected:non_rigid_pose",
                            "rejected:wrong_size", "rejected:timestamp_backwards"]
    assert outcomes[5].startswith("rejected:invalid_frame")
    assert sum(mapper.stats.rejected.values()) == 6 and mapper.stats.frames_received == 7
    # NaN / inf / negative depth inside an otherwise good frame: those pixels are just invalid.
    later = ds[3]
    dirty = later.depth.copy()
    dirty[:10] = np.nan
    dirty[10:20] = -1.0
    dirty[20:25] = np.inf
    noisy = variant(depth=dirty, world_from_camera=later.world_from_camera, rgb=later.rgb, timestamp=later.timestamp)
    assert mapper.add_frame(noisy) == "keyframe"
    for t in mapper.snapshot().gaussians.tensors().values():
        assert torch.isfinite(t).all()


def test_mapping_a_small_scene_reaches_useful_quality(synth_dir):
    from clipgs.eval.evaluate import evaluate
    from clipgs.mapping.offline import keyframe_time_breakdown, map_dataset
    from clipgs.mapping.state import MAPPING_PHASES

    ds = open_dataset(synth_dir)
    mapper, summary = map_dataset(ds, MapperConfig(iters_per_keyframe=10), progress=False)
    assert summary["keyframes"] == summary["frames"] == 22  # 15 degrees per frame: every frame is a keyframe
    result = evaluate(mapper.snapshot().gaussians, ds, progress=False)
    assert result["views"] == 2
    assert result["psnr_db"] > 20.0 and result["depth_l1_m"] < 0.15
    phases = summary["phase_seconds"]  # where the mapping time went, by phase; the iteration time is the steps'
    assert set(phases) == set(MAPPING_PHASES)
    assert phases["steps"] > 0 and phases["growth"] > 0 and phases["rounds"] >= 0
    assert sum(phases.values()) <= summary["mapping_seconds"]
    assert summary["seconds_per_iteration"] == pytest.approx(phases["steps"] / summary["iterations"])
    line = keyframe_time_breakdown(summary)
    assert line.startswith("per keyframe: steps ") and "growth" in line and line.endswith(" ms")

