"""3DCS switches: the label term's share of the decoder's gradient, pseudo-labels only where Gaussians are old,
rounds that wait while a live stream is ahead of the mapper."""
from __future__ import annotations

import torch

from clipgs.data.dataset import open_dataset
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.mapper import IncrementalMapper
from clipgs.semantics.config import SemanticTrainingConfig
from clipgs.semantics.self_training import rendered_share
from clipgs.semantics.sources import SimulatedTeacher, TeacherCorruption
from clipgs.semantics.text import TextEncoder
from clipgs.semantics.trainer import SemanticTrainer
from tests.test_fusion import _random_scene


def _class_embeddings(synth_dir):
    classes = open_dataset(synth_dir).classes
    return torch.cat([torch.zeros(1, 64), TextEncoder("clipgs-tiny").encode(classes[1:])])


def test_3dcs_leaves_pixels_of_young_gaussians_unlabelled(synth_dir):
    ds, class_embeddings = open_dataset(synth_dir), _class_embeddings(synth_dir)
    teacher = SimulatedTeacher(class_embeddings, TeacherCorruption(0.0, 0.0, 0.0))
    labelled = {}
    for mature in (0, 2, 5):
        training = SemanticTrainingConfig(sem_dim=8, dcs_every=0, dcs_novel_views=1, dcs_novel_steps=0,
                                          dcs_confidence=0.0, dcs_mature_keyframes=mature)
        trainer = SemanticTrainer(training, teacher, class_embeddings)
        mapper = IncrementalMapper(MapperConfig(iters_per_keyframe=10, w_ssim=0.0, kf_translation_m=0.0),
                                   trainer=trainer)
        for i in range(4):
            mapper.add_frame(ds[i])
        trainer.refresh_pseudo_labels(mapper)
        labels = [kf.annotation.pseudo_labels for kf in mapper.keyframes]
        labelled[mature] = [int((lab >= 0).sum()) for lab in labels] + [len(trainer.novel_views)]
        if mature:
            ages = mapper.map.extra("age_keyframes", 1)[:, 0]
            assert int(ages.max()) == 4 and int(ages.min()) >= 1  # one per keyframe since each Gaussian joined
    assert all(n > 0 for n in labelled[0])
    assert labelled[5] == [0, 0, 0, 0, 0]  # no Gaussian is 5 keyframes old: no pseudo-label, no novel view
    # Two keyframes old: the first keyframes' Gaussians are, the last keyframes' new ones are not.
    assert 0 < labelled[2][0] <= labelled[0][0] and labelled[2][3] < labelled[0][3]


def test_rendered_share_of_chosen_gaussians():
    gmap, camera = _random_scene()
    chosen = torch.arange(len(gmap)) % 3 == 0
    alpha = gmap.render(camera, semantic=False, backend="torch").alpha
    seen = alpha > 1e-3
    for backend in ("torch", "cpu"):
        share = rendered_share(gmap, chosen, camera, backend)
        rest = rendered_share(gmap, ~chosen, camera, backend)
        torch.testing.assert_close(share[seen] + rest[seen], torch.ones_like(share[seen]), atol=1e-6, rtol=0)
        assert 0.1 < float(share[seen].mean()) < 0.6 and bool((share >= 0).all())
        assert bool((rendered_share(gmap, torch.ones_like(chosen), camera, backend)[seen] > 1 - 1e-6).all())


def test_3dcs_cross_entropy_reaches_the_decoder_by_its_share(synth_dir):
    class_embeddings = _class_embeddings(synth_dir)
    rows = torch.randn(50, 8, requires_grad=True)
    target = torch.randint(1, len(class_embeddings), (50,))
    grads = {}
    for share in (1.0, 0.25, 0.0):
        trainer = SemanticTrainer(SemanticTrainingConfig(sem_dim=8, dcs_decoder_share=share), None,
                                  class_embeddings)
        trainer._build_decoder(class_embeddings.shape[1])
        rows.grad = None
        logits = trainer._label_logits(None, rows)
        torch.nn.functional.cross_entropy(logits, target).backward()
        grads[share] = (logits.detach(), [p.grad for p in trainer.decoder.parameters()], rows.grad.clone())
    assert all(g is not None and bool(g.abs().sum() > 0) for g in grads[1.0][1])
    assert all(g is None for g in grads[0.0][1])  # only the attributes learn from the labels
    for share in (0.25, 0.0):
        torch.testing.assert_close(grads[share][0], grads[1.0][0])  # the same logits
        torch.testing.assert_close(grads[share][2], grads[1.0][2])  # and the same attribute gradient
    for g_part, g_all in zip(grads[0.25][1], grads[1.0][1], strict=True):
        torch.testing.assert_close(g_part, 0.25 * g_all)


def test_3dcs_rounds_wait_while_frames_wait_for_the_mapper(synth_dir):
    """dcs_yield: a round due while the stream is ahead of the mapper (frames waiting) waits, novel-view steps
    too, and the owed round runs at the first keyframe the mapper has caught up; with dcs_yield off nothing waits."""
    ds, class_embeddings = open_dataset(synth_dir), _class_embeddings(synth_dir)
    teacher = SimulatedTeacher(class_embeddings, TeacherCorruption(0.0, 0.0, 0.0))
    runs = {}
    for wait in (True, False):
        training = SemanticTrainingConfig(sem_dim=8, dcs_start=3, dcs_every=2, dcs_novel_views=1, dcs_novel_steps=1,
                                          dcs_confidence=0.0, dcs_yield=wait)
        trainer = SemanticTrainer(training, teacher, class_embeddings)
        mapper = IncrementalMapper(MapperConfig(iters_per_keyframe=3, kf_translation_m=0.0), trainer=trainer)
        trainer.stream_behind = lambda m=mapper: m.stats.keyframes in {3, 4, 5}  # frames wait at their ends
        rounds, novel_steps = [], []

        def counted(*args, log=novel_steps, m=mapper, steps=mapper.train_step, **kwargs):
            if kwargs.get("only") == {"semantics"}:  # a novel-view step (keyframe steps train everything)
                log.append(m.stats.keyframes)
            return steps(*args, **kwargs)

        mapper.train_step = counted
        for i in range(7):
            mapper.add_frame(ds[i])
            rounds.append(trainer.pseudo_label_rounds)
        runs[wait] = rounds, trainer.dcs_rounds_waited, sorted(set(novel_steps) & {4, 5, 6, 7})
    assert runs[False][:2] == ([0, 0, 1, 1, 2, 2, 3], 0)  # due after keyframes 3, 5 and 7
    rounds, waited, novel = runs[True]
    assert rounds == [0, 0, 0, 0, 0, 1, 2] and waited == 3  # waited at keyframes 3, 4 (owed) and 5; ran at 6, 7
    assert runs[False][2] == [4, 5, 6, 7] and novel == [7]  # novel-view steps: none while frames wait
    spent = mapper.stats.seconds  # the last run's (no waiting): its rounds and novel-view steps are timed apart
    assert spent["keyframe_work"] > 0 and spent["rounds"] > 0 and spent["steps"] > 0
