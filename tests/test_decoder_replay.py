"""Decoder replay: rows kept per keyframe, drawn back into later steps, training the decoder only."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from clipgs.data.dataset import open_dataset
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.mapper import IncrementalMapper
from clipgs.semantics.config import SemanticTrainingConfig
from clipgs.semantics.sources import MaskEmbeddings, SimulatedTeacher, TeacherCorruption
from clipgs.semantics.supervision import KeyframeSemantics, compact_ids, replay_batch, replay_loss
from clipgs.semantics.trainer import SemanticTrainer
from tests.test_self_training import _class_embeddings


def _annotation(masks: int, rows: int, seed: int) -> KeyframeSemantics:
    g = torch.Generator().manual_seed(seed)
    embeddings = F.normalize(torch.randn(masks, 6, generator=g), dim=1)
    ids = torch.randint(masks, (4, 5), generator=g)
    sem = KeyframeSemantics(MaskEmbeddings(ids, embeddings))
    sem.replay = torch.randn(rows, 3, generator=g), compact_ids(torch.randint(masks, (rows,), generator=g))
    return sem


def test_replay_batch_stacks_other_keyframes_rows_with_their_own_embeddings():
    pool = [_annotation(3, 7, 0), _annotation(5, 4, 1), _annotation(2, 6, 2), KeyframeSemantics(None)]
    current = pool[1]
    rows, ids, embeddings = replay_batch(pool, current, 10, torch.Generator().manual_seed(0))
    assert rows.shape == (13, 3) and ids.shape == (13,) and ids.dtype == torch.int64
    assert embeddings.shape == (5, 6)  # pool[0]'s 3 and pool[2]'s 2 (current and the one without rows left out)
    # Each row keeps its own keyframe's embedding for its mask, whatever the order drawn.
    wanted = {(tuple(r.tolist()), tuple(a.masks.embeddings[int(i)].tolist()))
              for a in (pool[0], pool[2]) for r, i in zip(*a.replay, strict=True)}
    got = {(tuple(r.tolist()), tuple(embeddings[int(i)].tolist())) for r, i in zip(rows, ids, strict=True)}
    assert got == wanted
    one = replay_batch(pool, current, 1, torch.Generator().manual_seed(0))
    assert len(one[0]) in (7, 6) and int(one[1].max()) < len(one[2])
    assert replay_batch(pool, current, 0, torch.Generator()) is None
    assert replay_batch([current, pool[3]], current, 4, torch.Generator()) is None


def _map(synth_dir, replay_pixels: int, frames: int = 4):
    ds, class_embeddings = open_dataset(synth_dir), _class_embeddings(synth_dir)
    teacher = SimulatedTeacher(class_embeddings, TeacherCorruption(0.0, 0.0, 0.0))
    trainer = SemanticTrainer(SemanticTrainingConfig(sem_dim=8, dcs_every=0, sem_replay_pixels=replay_pixels,
                                                     sem_replay_keyframes=2), teacher, class_embeddings)
    mapper = IncrementalMapper(MapperConfig(iters_per_keyframe=6, w_ssim=0.0, kf_translation_m=0.0), trainer=trainer)
    for i in range(frames):
        mapper.add_frame(ds[i])
    return mapper, trainer


def test_mapping_keeps_replay_rows_and_trains_the_decoder_on_them(synth_dir):
    mapper, trainer = _map(synth_dir, replay_pixels=100)
    annotations = [kf.annotation for kf in mapper.keyframes]
    assert len(annotations) == 4
    for sem in annotations:
        rows, ids = sem.replay
        assert rows.shape == (100, 8) and not rows.requires_grad and ids.dtype == torch.int16
        assert int(ids.min()) >= 0 and int(ids.max()) < len(sem.masks.embeddings)
        assert sem.nbytes >= rows.numel() * 4 + ids.numel() * 2 + sem.masks.embeddings.numel() * 4
    assert "sem_replay" in mapper.stats.last_parts  # the last step drew other keyframes' rows
    trainer.begin_round(mapper)
    trainer.decoder.zero_grad()
    attributes = mapper.map.gaussians.semantics
    before = None if attributes.grad is None else attributes.grad.clone()
    replay_loss(trainer.decoder, trainer._replay_pool, annotations[-1], trainer.config, trainer._generator).backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in trainer.decoder.parameters())
    after = attributes.grad
    assert (before is None and after is None) or torch.equal(before, after)  # the attributes learn nothing

    mapper, _ = _map(synth_dir, replay_pixels=0, frames=3)
    assert all(kf.annotation.replay is None for kf in mapper.keyframes)
    assert "sem_replay" not in mapper.stats.last_parts
