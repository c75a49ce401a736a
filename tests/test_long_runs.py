"""Long runs in bounded memory and time: compact keyframes, the keyframe budget, mapping resolution, the
Gaussian budget from the first keyframe on, bounded 3DCS rounds."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipgs.data.dataset import open_dataset
from clipgs.data.frame import Camera, Frame
from clipgs.geometry import intrinsics_from_hfov
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.keyframes import Keyframe, KeyframeStore
from clipgs.mapping.mapper import IncrementalMapper
from clipgs.semantics.config import SemanticTrainingConfig
from clipgs.semantics.trainer import SemanticTrainer, compact_ids

FAST = dict(iters_per_keyframe=2, w_ssim=0.0)


def flat_frame(width: int, height: int, x: float = 0.0, yaw_deg: float = 0.0, depth: float = 2.0) -> Frame:
    """A camera at (x, 0, 0) turned by ``yaw_deg`` about y, looking at a textured wall ``depth`` m away."""
    rng = np.random.default_rng(int(x * 1000) + int(yaw_deg))
    pose = np.eye(4)
    a = np.radians(yaw_deg)
    pose[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    pose[0, 3] = x
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Frame(rgb, np.full((height, width), depth, np.float32), intrinsics_from_hfov(width, height, 60.0), pose)


def test_keyframe_storage_is_compact_and_round_trips():
    frame = flat_frame(64, 48)
    frame.depth[0, :3] = [0.0, 1.23456, 70.0]  # invalid, sub-millimetre, beyond uint16 millimetres
    kf = Keyframe.from_frame(frame, torch.device("cpu"))
    assert kf.color.dtype == torch.uint8 and kf.depth_mm.dtype == torch.uint16
    assert torch.equal(kf.rgb, torch.from_numpy(frame.rgb).float() / 255.0)
    assert kf.depth[0, :3].tolist() == pytest.approx([0.0, 1.235, 0.0], abs=1e-6)
    assert float((kf.depth[1:] - torch.from_numpy(frame.depth[1:])).abs().max()) <= 5e-4
    assert kf.nbytes == 64 * 48 * (3 + 2)  # float32 RGB + depth were 64 * 48 * 16 bytes
    assert kf.camera.width == 64 and np.allclose(kf.camera.K, frame.K)


def test_ids_and_labels_take_the_smallest_integer_type():
    assert compact_ids(torch.tensor([[-1, 5], [300, 2]])).dtype == torch.int16
    assert compact_ids(torch.tensor([[-1, 40_000]])).dtype == torch.int32
    assert compact_ids(torch.tensor([[-1, 7]])).tolist() == [[-1, 7]]


def test_keyframe_store_keeps_its_budget_and_drops_revisits_first():
    cam_bytes = 32 * 24 * 5
    store = KeyframeStore(budget_bytes=6 * cam_bytes, protect=2)
    # A walk along x, then back over the same places (revisits), then a turn on the spot.
    path = [(x, 0.0) for x in (0.0, 0.5, 1.0, 1.5)] + [(1.02, 0.0), (0.52, 0.0)] + [(0.5, 90.0), (0.5, 180.0)]
    for i, (x, yaw) in enumerate(path):
        frame = flat_frame(32, 24, x, yaw)
        frame.index = i
        store.append(Keyframe.from_frame(frame, torch.device("cpu")))
        assert store.nbytes <= 6 * cam_bytes
    kept = [kf.index for kf in store]
    assert len(store) == 6 and store.evicted == 2
    assert kept[-2:] == [6, 7]  # the protected newest stay
    # The two revisits (4 near 2, 5 near 1) each cost one of a near-duplicate pair; the far ends and the turns stay.
    assert {0, 3, 6, 7} <= set(kept) and len({1, 5} & set(kept)) == 1 and len({2, 4} & set(kept)) == 1


def test_mapper_holds_its_keyframe_budget(synth_dir):
    ds = open_dataset(synth_dir)
    per_keyframe = 80 * 60 * 5
    mapper = IncrementalMapper(MapperConfig(**FAST, window_size=2, kf_translation_m=0.01,
                                            keyframe_budget_mb=5 * per_keyframe / 2**20))
    for i in ds.train_indices[:12]:
        mapper.add_frame(ds[i])
    s = mapper.stats
    assert s.keyframes > 5 and s.keyframes_held == len(mapper.keyframes) == 5
    assert s.keyframes_evicted == s.keyframes - 5 and s.keyframe_bytes <= 5 * per_keyframe


def test_first_keyframe_respects_the_gaussian_budget_at_any_resolution():
    big = flat_frame(1600, 1200)
    mapper = IncrementalMapper(MapperConfig(**FAST, max_gaussians=20_000))
    assert mapper.add_frame(big) == "keyframe"
    assert mapper.stats.added == 20_000 and mapper.gaussian_count <= 20_000


def test_mapping_resolution_is_independent_of_the_camera(synth_dir):
    ds = open_dataset(synth_dir)  # 80 x 60 frames
    mapper = IncrementalMapper(MapperConfig(**FAST, map_width=40))
    for i in ds.train_indices[:4]:
        mapper.add_frame(ds[i])
    kf = mapper.keyframes[0]
    assert kf.color.shape == (30, 40, 3) and kf.camera.width == 40
    K = ds[ds.train_indices[0]].K  # pixel centres at integers: c' = (c + 0.5) s - 0.5
    assert np.allclose(kf.camera.K[[0, 1], [0, 1]], K[[0, 1], [0, 1]] / 2)
    assert np.allclose(kf.camera.K[:2, 2], (K[:2, 2] + 0.5) / 2 - 0.5)
    assert mapper.stats.added <= 4 * 40 * 30
    view = ds[ds.test_indices[0]]
    full = mapper.snapshot().gaussians.render(Camera(view.K, 80, 60, view.world_from_camera), semantic=False)
    assert full.image.shape == (60, 80, 3) and float(full.alpha.mean()) > 0.5


def test_resized_frame_scales_intrinsics_and_keeps_labels_nearest(synth_dir):
    frame = open_dataset(synth_dir)[0]
    half = frame.resized(40)
    assert half.rgb.shape == (30, 40, 3) and half.depth.shape == (30, 40)
    assert np.isclose(half.K[0, 0], frame.K[0, 0] / 2) and np.isclose(half.K[1, 2], (frame.K[1, 2] + 0.5) / 2 - 0.5)
    assert np.array_equal(half.world_from_camera, frame.world_from_camera)
    assert set(np.unique(half.labels)) <= set(np.unique(frame.labels))  # nearest: no blended class ids
    assert frame.resized(80) is frame


def test_3dcs_round_relabels_a_bounded_rotating_set():
    trainer = SemanticTrainer(SemanticTrainingConfig(dcs_max_keyframes=6), source=lambda f: None)
    assert trainer.relabel_set(5) == [0, 1, 2, 3, 4]
    rounds = [trainer.relabel_set(20) for _ in range(6)]
    assert all(len(r) == 6 and r[-3:] == [17, 18, 19] for r in rounds)  # the newest half every round
    older = [i for r in rounds for i in r[:3]]
    assert sorted(set(older)) == list(range(17))  # every older keyframe is revisited in turn


def test_async_source_never_blocks_mapping_and_results_land_on_their_keyframe():
    """A source held on a gate: the mapper goes on; a keyframe replaced while the worker was busy is skipped;
    released results attach to the keyframe they were computed from."""
    import threading

    from clipgs.semantics.sources import MaskEmbeddings

    gate, started = threading.Event(), threading.Event()

    def source(frame: Frame) -> MaskEmbeddings:
        started.set()
        assert gate.wait(timeout=30), "test gate never opened"
        emb = torch.zeros(1, 8)
        emb[0, frame.index] = 1.0  # which frame these masks came from
        return MaskEmbeddings(torch.zeros(frame.height, frame.width, dtype=torch.long), emb)

    trainer = SemanticTrainer(SemanticTrainingConfig(sem_dim=4, async_source=True, dcs_every=0), source)
    mapper = IncrementalMapper(MapperConfig(**FAST), trainer=trainer)
    try:
        for i, x in enumerate((0.0, 0.5, 1.0)):
            frame = flat_frame(32, 24, x)
            frame.index = i
            assert mapper.add_frame(frame) == "keyframe"  # returns while the source is held
            if i == 0:
                assert started.wait(timeout=10)
        kfs = list(mapper.keyframes)
        assert all(kf.annotation.masks is None for kf in kfs) and trainer.decoder is None
        assert trainer.worker.skipped == 1  # keyframe 1 was replaced by keyframe 2 while 0 ran
        gate.set()
        assert trainer.worker.wait_idle(timeout=30)
        assert kfs[0].annotation.masks.embeddings[0, 0] == 1 and kfs[1].annotation.masks is None
        assert kfs[2].annotation.masks.embeddings[0, 2] == 1
        assert kfs[0].annotation.masks.mask_ids.dtype == torch.int16
        frame = flat_frame(32, 24, 1.5)
        frame.index = 3
        mapper.add_frame(frame)
        assert trainer.decoder is not None and mapper.map.gaussians.sem_dim == 4
        counters = trainer.counters()
        assert counters["semantics_skipped"] == 1 and counters["semantic_lag_s"] >= 0
    finally:
        gate.set()
        trainer.close()
    assert trainer.worker is None
