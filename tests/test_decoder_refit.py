"""Decoder refit when mapping ends: every held keyframe rendered once, the decoder alone fitted to their masks."""
from __future__ import annotations

import copy
import dataclasses
import itertools
import threading
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from clipgs.data.dataset import open_dataset
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.mapper import IncrementalMapper
from clipgs.mapping.offline import map_dataset
from clipgs.mapping.worker import MapperWorker
from clipgs.semantics.config import SemanticTrainingConfig
from clipgs.semantics.refit import RefitRows, evenly_spaced, fit_decoder, refit_batch, refit_loss, render_refit_rows
from clipgs.semantics.sac import DecodedPixels, SemanticDecoder, sac_losses, weighted_sac
from clipgs.semantics.sources import SimulatedTeacher, TeacherCorruption
from clipgs.semantics.trainer import SemanticTrainer
from tests.test_self_training import _class_embeddings


def _trainer(synth_dir, **settings) -> tuple[SemanticTrainer, object]:
    class_embeddings = _class_embeddings(synth_dir)
    teacher = SimulatedTeacher(class_embeddings, TeacherCorruption(0.0, 0.0, 0.0))
    config = SemanticTrainingConfig(**{"sem_dim": 8, "dcs_every": 0, "sem_pixels": 256, **settings})
    return SemanticTrainer(config, teacher, class_embeddings), open_dataset(synth_dir)


def _map(synth_dir, frames: int = 4, **settings) -> tuple[IncrementalMapper, SemanticTrainer]:
    trainer, ds = _trainer(synth_dir, **settings)
    mapper = IncrementalMapper(MapperConfig(iters_per_keyframe=4, w_ssim=0.0, kf_translation_m=0.0), trainer=trainer)
    for i in range(frames):
        mapper.add_frame(ds[i])
    return mapper, trainer


def _decoder_state(trainer: SemanticTrainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.decoder.parameters()]


def test_refit_rows_are_the_rendered_attributes_at_mask_pixels(synth_dir):
    mapper, _ = _map(synth_dir, frames=3, refit_steps=0)
    data = render_refit_rows(mapper.map.gaussians, list(mapper.keyframes), 50, torch.Generator().manual_seed(0))
    assert len(data) == 3
    for kf, rows in zip(mapper.keyframes, data, strict=True):
        assert rows.rows.shape == (50, 8) and not rows.rows.requires_grad
        assert rows.ids.dtype == torch.int16 and int(rows.ids.max()) < len(rows.embeddings)
        assert rows.embeddings is kf.annotation.masks.embeddings
        # The rows are the full render's attributes at pixels whose mask ids they carry.
        full = mapper.render(kf.camera).semantics.reshape(-1, 8)
        ids = kf.annotation.masks.mask_ids.reshape(-1)
        for row, mask in zip(rows.rows[:10], rows.ids[:10], strict=True):
            hits = torch.nonzero((full - row).abs().max(dim=1).values < 1e-4).squeeze(1)
            assert len(hits) and bool((ids[hits] == int(mask)).any())


def test_refit_batch_keeps_each_rows_own_embeddings_and_labels():
    g = torch.Generator().manual_seed(0)
    data = [RefitRows(torch.randn(n, 3, generator=g), torch.randint(m, (n,), generator=g).short(),
                      F.normalize(torch.randn(m, 5, generator=g), dim=1),
                      None if n == 4 else torch.randint(-1, 7, (n,), generator=g).short())
            for n, m in ((6, 2), (4, 3), (5, 1))]
    rows, ids, embeddings, labels = refit_batch(data, 2, torch.Generator().manual_seed(1))
    assert ids.dtype == labels.dtype == torch.int64 and int(ids.max()) < len(embeddings)

    def own(d, r, i, lab):
        return tuple(r.tolist()), tuple(d.embeddings[int(i)].tolist()), -1 if d.labels is None else int(lab)

    wanted = {own(d, r, i, lab) for d in data
              for r, i, lab in zip(d.rows, d.ids, d.labels if d.labels is not None else d.ids, strict=True)}
    got = {(tuple(r.tolist()), tuple(embeddings[int(i)].tolist()), int(lab))
           for r, i, lab in zip(rows, ids, labels, strict=True)}
    assert got <= wanted and len(got) == len(rows) and len(rows) in (10, 11, 9)
    assert len(refit_batch(data, 10, torch.Generator())[0]) == 15  # more than there are: all of them


def test_fit_decoder_lowers_the_loss_and_trains_only_the_optimisers_parameters():
    g = torch.Generator().manual_seed(0)
    decoder = SemanticDecoder(4, 6, 16)
    targets = F.normalize(torch.randn(3, 6, generator=g), dim=1)
    data = [RefitRows(torch.randn(30, 4, generator=g), torch.arange(30).remainder(3).short(), targets)
            for _ in range(3)]
    before = [r.rows.clone() for r in data]

    def loss(rows, ids, embeddings, labels):
        return (1 - (F.normalize(decoder(rows), dim=1) * embeddings[ids]).sum(1)).mean()

    calls = []
    losses = fit_decoder(data, 200, 2, loss, torch.optim.Adam(decoder.parameters(), lr=1e-2), g,
                         lambda done, total: calls.append((done, total)))
    assert len(losses) == 200 and losses[-1] < 0.5 * losses[0]
    assert calls[0] == (1, 200) and calls[-1] == (200, 200)
    assert all(torch.equal(a, b.rows) for a, b in zip(before, data, strict=True))  # the rows are constants
    assert fit_decoder([], 5, 2, loss, torch.optim.Adam(decoder.parameters()), g) == []


def test_finish_refits_the_decoder_alone_and_off_changes_nothing(synth_dir):
    mapper, trainer = _map(synth_dir, refit_steps=25, refit_pixels=64)
    decoder, attributes = _decoder_state(trainer), mapper.map.gaussians.semantics.detach().clone()
    seen = []
    mapper.finish(progress=lambda done, total: seen.append((done, total)))
    assert trainer.refit.steps == len(trainer.refit.losses) == 25 and seen[-1] == (25, 25)
    assert trainer.refit.keyframes == 4 and "25 steps over 4 keyframes" in str(trainer.refit)
    assert mapper.counters()[1]["decoder_refit"] is trainer.refit
    assert any(not torch.equal(a, b) for a, b in zip(decoder, _decoder_state(trainer), strict=True))
    assert torch.equal(attributes, mapper.map.gaussians.semantics)  # the Gaussians are not trained
    assert mapper.snapshot().decoder is not None

    mapper, trainer = _map(synth_dir, frames=2, refit_steps=0)
    decoder = _decoder_state(trainer)
    mapper.finish()
    assert trainer.refit is None and all(torch.equal(a, b) for a, b in zip(decoder, _decoder_state(trainer),
                                                                                strict=True))


def test_finish_holds_the_map_lock_so_snapshots_see_a_whole_decoder(synth_dir):
    mapper, trainer = _map(synth_dir, frames=2, refit_steps=30, refit_pixels=64)
    copies, threads = [], []
    original = trainer.finish

    def finish(m, progress=None, stop=None):  # a snapshot asked for while the refit is under way
        threads.append(threading.Thread(target=lambda: copies.append(copy.deepcopy(mapper.snapshot().decoder))))
        threads[0].start()
        original(m, progress, stop)

    trainer.finish = finish
    mapper.finish()
    threads[0].join(timeout=30)
    assert len(copies) == 1
    # The snapshot waited for the refit: its decoder is the refitted one.
    assert all(torch.equal(a, b) for a, b in zip(copies[0].parameters(), trainer.decoder.parameters(), strict=True))


def test_map_dataset_finishes_with_the_refit(synth_dir):
    trainer, ds = _trainer(synth_dir, refit_steps=7, refit_pixels=64)
    _, summary = map_dataset(ds, MapperConfig(iters_per_keyframe=2, w_ssim=0.0), max_frames=3, progress=False,
                             trainer=trainer)
    assert summary["keyframes"] >= 1 and trainer.refit.steps == 7


def test_no_decoder_no_refit(synth_dir):
    """The no-SAC baseline (sem_hidden 0: full embeddings per Gaussian, no decoder parameters) finishes without one."""
    trainer, ds = _trainer(synth_dir, refit_steps=7, sem_hidden=0, sem_dim=_class_embeddings(synth_dir).shape[1])
    mapper, _ = map_dataset(ds, MapperConfig(iters_per_keyframe=2, w_ssim=0.0), max_frames=2, progress=False,
                            trainer=trainer)
    assert trainer.optimizer is None and trainer.refit is None and mapper.stats.keyframes >= 1


def test_refit_loss_adds_the_label_term_only_where_labelled():
    g = torch.Generator().manual_seed(0)
    decoder = SemanticDecoder(4, 6, 16)
    vocabulary = F.normalize(torch.randn(5, 6, generator=g), dim=1)
    rows, ids = torch.randn(40, 4, generator=g), torch.arange(40).remainder(3)
    embeddings = vocabulary[1:4]
    none = torch.full((40,), -1)
    config = SemanticTrainingConfig(refit_label_weight=0.5)
    sac = weighted_sac(sac_losses(DecodedPixels(decoder, rows), ids, embeddings, config.sem_tau), config)
    assert torch.allclose(refit_loss(decoder, config, vocabulary)(rows, ids, embeddings, none), sac)
    labels = none.clone()
    labels[:10] = 2
    logits = F.normalize(decoder(rows[:10]), dim=1) @ vocabulary.T / config.sem_tau
    wanted = sac + 0.5 * F.cross_entropy(logits, labels[:10])
    assert torch.allclose(refit_loss(decoder, config, vocabulary)(rows, ids, embeddings, labels), wanted, atol=1e-5)
    off = dataclasses.replace(config, refit_label_weight=0.0)
    assert torch.allclose(refit_loss(decoder, off, vocabulary)(rows, ids, embeddings, labels), sac)
    assert torch.allclose(refit_loss(decoder, config, None)(rows, ids, embeddings, labels), sac)


def test_a_long_walks_refit_renders_a_bounded_spread_of_keyframes():
    assert evenly_spaced([1, 2, 3], 5) == [1, 2, 3]
    picked = evenly_spaced(list(range(1000)), 600)
    assert len(picked) == len(set(picked)) == 600 and picked[0] == 0 and picked[-1] == 999
    gaps = [b - a for a, b in itertools.pairwise(picked)]
    assert set(gaps) <= {1, 2}
    assert evenly_spaced(list(range(10)), 1) == [0]


def test_fit_decoder_takes_the_lock_for_each_step_and_stops_when_told():
    g = torch.Generator().manual_seed(0)
    decoder = SemanticDecoder(4, 6, 16)
    data = [RefitRows(torch.randn(20, 4, generator=g), torch.arange(20).remainder(2).short(),
                      F.normalize(torch.randn(2, 6, generator=g), dim=1))]

    class CountingLock:
        entered = 0

        def __enter__(self):
            self.entered += 1

        def __exit__(self, *exc):
            return False

    lock, done = CountingLock(), []

    def loss(rows, ids, embeddings, labels):
        done.append(1)
        return decoder(rows).square().mean()

    losses = fit_decoder(data, 10, 1, loss, torch.optim.Adam(decoder.parameters()), g, step_lock=lock,
                         stop=lambda: len(done) >= 4)
    assert len(losses) == 4 and lock.entered == 4


class QuietMapper:
    """Stands in for IncrementalMapper under a MapperWorker: frames 'kf' become keyframes, others are skipped;
    the trainer's finish is recorded."""

    def __init__(self):
        self.stats, self.trainer, self.finished = SimpleNamespace(keyframes=0), self, []

    def prepare(self, frame):
        return [frame]

    def integrate(self, prepared):
        if prepared[0] != "kf":
            return "skipped"
        self.stats.keyframes += 1
        return "keyframe"

    def finish(self, mapper, progress=None, stop=None, ended=True):
        assert mapper is self and stop is not None and not stop() and not ended  # only quiet: the Gaussians stay
        self.finished.append(self.stats.keyframes)


def _stream(worker, frames, period_s=0.05):
    for frame in frames:
        worker.submit(frame)
        time.sleep(period_s)


def test_the_worker_refits_once_per_new_map_when_no_keyframe_comes():
    mapper = QuietMapper()
    worker = MapperWorker(mapper, idle_refit_s=0.3)
    _stream(worker, ["kf", "x", "kf"])
    assert mapper.finished == []  # keyframes keep coming: no refit
    _stream(worker, ["x"] * 16)  # the robot stands still: frames, no keyframes
    assert mapper.finished == [2] and worker.idle_refits == 1
    time.sleep(0.8)  # the stream stops: nothing new to refit
    assert mapper.finished == [2]
    _stream(worker, ["kf"] + ["x"] * 16)  # a new keyframe, then quiet again
    assert mapper.finished == [2, 3] and worker.processed + worker.dropped == 36 and worker.outcomes["keyframe"] == 3
    worker.stop(10)

    mapper = QuietMapper()
    worker = MapperWorker(mapper)  # off by default (the node turns it on: idle_refit_s)
    _stream(worker, ["kf"], period_s=0.8)
    assert mapper.finished == [] and worker.idle_refits == 0
    worker.stop(10)


def test_an_idle_refit_of_a_real_semantic_map_leaves_the_gaussians_alone(synth_dir):
    trainer, ds = _trainer(synth_dir, refit_steps=20, refit_pixels=64)
    mapper = IncrementalMapper(MapperConfig(iters_per_keyframe=2, w_ssim=0.0, kf_translation_m=0.0), trainer=trainer)
    worker = MapperWorker(mapper, idle_refit_s=0.2)
    for i in range(2):
        worker.submit(ds[i])
        worker.wait_idle(60)
    gaussians = mapper.snapshot().gaussians
    deadline = time.monotonic() + 60
    while worker.idle_refits == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.wait_idle(60)
    assert worker.idle_refits == 1 and trainer.refit.steps == 20 and worker.error is None
    assert torch.equal(gaussians.semantics, mapper.snapshot().gaussians.semantics)
    worker.stop(10)


def test_a_final_3dcs_round_relabels_keyframes_when_mapping_ends_not_while_it_is_quiet(synth_dir):
    mapper, trainer = _map(synth_dir, frames=6, dcs_every=10, refit_steps=0, dcs_final_keyframes=4, dcs_confidence=0.0)
    annotated = [kf for kf in mapper.keyframes if kf.annotation is not None]
    assert len(annotated) == 6 and trainer.pseudo_label_rounds == 0  # dcs_start (20) not reached while mapping
    before = mapper.snapshot().gaussians
    trainer.finish(mapper, ended=False)  # the stream only went quiet: the Gaussians stay as they are
    assert trainer.pseudo_label_rounds == 0 and torch.equal(before.semantics, mapper.snapshot().gaussians.semantics)
    assert trainer.final_round(mapper, stop=lambda: True) == 0 and trainer.pseudo_label_rounds == 0
    trainer.finish(mapper)  # the stream ended: two sweeps over 4 keyframes spread over the walk, a step on each
    labelled = [k for k, kf in enumerate(annotated) if kf.annotation.pseudo_labels is not None]
    assert labelled == [0, 2, 3, 5] and trainer.pseudo_label_rounds == 1
    for k in labelled:
        labels = annotated[k].annotation.pseudo_labels
        assert labels.shape == (60, 80) and int(labels.max()) > 0  # vocabulary rows, -1 where none
    after = mapper.snapshot().gaussians
    assert not torch.equal(before.semantics, after.semantics)
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh0"):  # semantic-only steps
        assert torch.equal(getattr(before, name), getattr(after, name)), name


def test_finishing_reports_the_final_round_and_the_refit_against_one_total(synth_dir):
    mapper, _ = _map(synth_dir, frames=6, dcs_every=10, refit_steps=7, refit_pixels=64, dcs_final_keyframes=4,
                     dcs_confidence=0.0)
    seen = []
    mapper.finish(progress=lambda done, total: seen.append((done, total)))
    assert {total for _, total in seen} == {2 * 4 + 7}  # two sweeps over 4 keyframes, then 7 refit steps
    assert [done for done, _ in seen] == list(range(1, 16))  # one bar that never goes back


def test_the_final_round_sweeps_its_keyframes_relabelling_each_before_its_step(synth_dir, monkeypatch):
    mapper, trainer = _map(synth_dir, frames=6, dcs_every=10, refit_steps=0, dcs_final_keyframes=3,
                           dcs_final_sweeps=3, dcs_confidence=0.0)
    calls = []
    relabel, step = trainer._relabel, mapper.train_step
    monkeypatch.setattr(trainer, "_relabel", lambda m, kf, *a: calls.append(("relabel", id(kf))) or relabel(m, kf, *a))
    monkeypatch.setattr(mapper, "train_step", lambda camera, *a, **k: calls.append(("step", id(camera))) or
                        step(camera, *a, **k))
    progress = []
    assert trainer.final_round(mapper, progress=lambda *a: progress.append(a)) == 9
    assert trainer.pseudo_label_rounds == 1 and progress == [(k, 9) for k in range(1, 10)]
    annotated = [kf for kf in mapper.keyframes if kf.annotation is not None]
    spread = evenly_spaced(annotated, 3)
    assert spread[0] is annotated[0] and spread[-1] is annotated[-1]  # spread over the walk
    chosen = {id(kf): id(kf.camera) for kf in spread}
    assert [kind for kind, _ in calls] == ["relabel", "step"] * 9
    for (_, kf), (_, camera) in zip(calls[::2], calls[1::2], strict=True):
        assert chosen[kf] == camera  # each step trains the keyframe just relabelled
    for sweep in range(3):  # every sweep visits each chosen keyframe once
        assert sorted(kf for _, kf in calls[sweep * 6:(sweep + 1) * 6:2]) == sorted(chosen)
    steps = iter(range(100))
    assert trainer.final_round(mapper, stop=lambda: next(steps) >= 4) == 4
