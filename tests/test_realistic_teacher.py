"""The realistic simulated teacher: its error statistics follow its settings, and it is deterministic."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipgs.data.dataset import open_dataset
from clipgs.semantics.pipeline import simulated_setup, teacher_from_notes, teacher_notes
from clipgs.semantics.realistic_teacher import RealisticCorruption, RealisticTeacher

CLEAN = dict(noise=0.0, gap=0.0, random_wrong=0.0, merge_fraction=0.0, stuff_split=0.0, split_fraction=0.0,
             confusion_share=0.0)


@pytest.fixture(scope="module")
def room(synth_dir):
    ds = open_dataset(synth_dir)
    _, _, vocab = simulated_setup(ds)
    return ds, vocab


def majority(ids: np.ndarray, where: np.ndarray) -> int:
    hits = ids[where]
    hits = hits[hits >= 0]
    return int(np.bincount(hits).argmax()) if hits.size else -1


def test_a_clean_teacher_is_right_everywhere(room):
    ds, vocab = room
    teacher = RealisticTeacher(vocab, ds.classes, RealisticCorruption(**CLEAN))
    for i in range(0, len(ds), 6):
        f = ds[i]
        obs = teacher(f)
        given = obs.classes.numpy()[obs.mask_ids.numpy().clip(0)]
        labelled = obs.mask_ids.numpy() >= 0
        assert (given[labelled] == f.labels[labelled]).all()


def test_confusions_repeat_across_views_at_the_configured_rates(room):
    ds, vocab = room
    c = RealisticCorruption(**{**CLEAN, "confusion_share": 0.5, "confusion_views": 0.8})
    teacher = RealisticTeacher(vocab, ds.classes, c)
    seen: dict[int, list[bool]] = {}  # instance -> per view: read as another class?
    for i in range(len(ds)):
        f = ds[i]
        obs = teacher(f)
        ids, given = obs.mask_ids.numpy(), obs.classes.numpy()
        for k in np.unique(f.instances):
            where = f.instances == k
            cls = int(np.bincount(f.labels[where]).argmax())
            m = majority(ids, where)
            if k == 0 or cls == 0 or m < 0:
                continue
            seen.setdefault(int(k), []).append(int(given[m]) != cls)  # the partner, or what it resembles
    leaning = [k for k in seen if teacher.leans(k)]
    assert 0.25 <= len(leaning) / len(seen) <= 0.75, (len(leaning), len(seen))
    rates = [np.mean(seen[k]) for k in leaning if len(seen[k]) >= 5]
    assert rates and abs(np.mean(rates) - 0.8) < 0.12  # the same objects, wrong in most of their views
    assert all(not any(seen[k]) for k in seen if k not in leaning)  # the others never
    assert (teacher.partner[1:] != np.arange(1, len(vocab))).all()  # a partner is another class


def test_small_objects_merge_into_their_support(room):
    ds, vocab = room
    teacher = RealisticTeacher(vocab, ds.classes, RealisticCorruption(**{**CLEAN, "merge_fraction": 1.0}))
    merged = checked = 0
    for i in range(len(ds)):
        f = ds[i]
        ids = teacher(f).mask_ids.numpy()
        for k in np.unique(f.instances):
            where = f.instances == k
            cls = int(np.bincount(f.labels[where]).argmax())
            if k == 0 or cls == 0 or ds.classes[cls] in ("wall", "floor", "ceiling") or where.mean() >= 0.01:
                continue
            support = teacher._support(f.instances, where, int(k))
            if support == 0 or majority(ids, where) < 0:
                continue
            checked += 1
            merged += majority(ids, where) == majority(ids, f.instances == support)
    assert checked > 5 and merged == checked


def test_noise_and_modality_gap_set_the_distance_to_the_text_embedding(room):
    ds, vocab = room
    f = ds[3]
    for noise, gap in ((0.0, 0.5), (0.4, 0.0)):
        c = RealisticCorruption(**{**CLEAN, "noise": noise, "gap": gap, "small_area": 0.0, "far_m": 100.0})
        obs = RealisticTeacher(vocab, ds.classes, c)(f)
        ids = obs.mask_ids.numpy()
        cos = []
        for m in range(len(obs.embeddings)):
            cls = int(np.bincount(f.labels[ids == m]).argmax())
            cos.append(float(obs.embeddings[m] @ vocab[cls]))
        expected = 1 / np.sqrt(1 + (noise or gap) ** 2)  # a random direction is near-orthogonal in D = 64
        assert abs(np.mean(cos) - expected) < 0.06, (noise, gap, np.mean(cos), expected)
        assert torch.allclose(obs.embeddings.norm(dim=-1), torch.ones(len(obs.embeddings)), atol=1e-5)


def test_deterministic_per_seed_and_view_and_rebuilt_from_notes(room):
    ds, vocab = room
    c = RealisticCorruption(seed=3)
    a, b = RealisticTeacher(vocab, ds.classes, c)(ds[5]), RealisticTeacher(vocab, ds.classes, c)(ds[5])
    assert torch.equal(a.mask_ids, b.mask_ids) and torch.equal(a.embeddings, b.embeddings)
    other = RealisticTeacher(vocab, ds.classes, RealisticCorruption(seed=4))(ds[5])
    assert not torch.equal(a.embeddings, other.embeddings)
    rebuilt = teacher_from_notes(teacher_notes(c), vocab, ds.classes)
    assert isinstance(rebuilt, RealisticTeacher) and torch.equal(rebuilt(ds[5]).embeddings, a.embeddings)
    assert "realistic: confusion_share=" in c.describe()
