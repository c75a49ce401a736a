"""Semantics: torchvision fallback, simulated teacher, SAC losses, 3DCS vote, mIoU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipgs.data.dataset import open_dataset
from clipgs.eval.metrics import semantic_scores
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.mapper import IncrementalMapper
from clipgs.semantics.config import SemanticTrainingConfig
from clipgs.semantics.sac import SemanticDecoder, sac_losses
from clipgs.semantics.self_training import vote_in_masks
from clipgs.semantics.sources import SimulatedTeacher, TeacherCorruption
from clipgs.semantics.text import TextEncoder
from clipgs.semantics.torch_compat import import_torchvision
from clipgs.semantics.trainer import SemanticTrainer


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder("clipgs-tiny")


@pytest.fixture(scope="module")
def class_embeddings(synth_dir, text_encoder):
    classes = open_dataset(synth_dir).classes
    return torch.cat([torch.zeros(1, 64), text_encoder.encode(classes[1:])])


def test_torchvision_imports_and_nms_works():
    tv = import_torchvision()
    from torchvision.ops import nms

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30.0], [0, 0, 9, 10]])
    assert nms(boxes, torch.tensor([0.9, 0.8, 0.7, 0.95]), 0.5).tolist() == [3, 2]
    assert tv.transforms.Resize is not None


def test_simulated_teacher_corruption_rate_and_determinism(synth_dir, class_embeddings):
    ds = open_dataset(synth_dir)
    teacher = SimulatedTeacher(class_embeddings, TeacherCorruption(wrong_fraction=0.3, boundary_noise=0.0,
                                                                  split_fraction=0.0, seed=1))
    wrong = total = 0
    for f in ds:
        obs = teacher(f)
        assert obs.mask_ids.shape == (60, 80) and obs.embeddings.shape[1] == 64
        torch.testing.assert_close(obs.embeddings.norm(dim=-1), torch.ones(len(obs.embeddings)))
        ids = obs.mask_ids.numpy()
        for m, cls in enumerate(obs.classes.tolist()):
            true = np.bincount(f.labels[ids == m]).argmax()
            wrong += int(cls != true)
            total += 1
    assert total > 200 and 0.22 < wrong / total < 0.38  # the configured 30 %, per mask
    again = teacher(ds[3])
    assert torch.equal(again.mask_ids, teacher(ds[3]).mask_ids)
    differs = [not torch.equal(teacher(ds[i]).classes, SimulatedTeacher(class_embeddings)(ds[i]).classes)
               for i in range(5)]
    assert any(differs)  # another seed errs differently
    with pytest.raises(ValueError, match="ground-truth labels and instances"):
        teacher(ds[0].__class__(ds[0].rgb, ds[0].depth, ds[0].K, ds[0].world_from_camera))


def test_sac_losses_decrease_on_a_toy_problem():
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(4, 32, generator=g), dim=-1)
    ids = torch.arange(400) % 4
    attrs = torch.zeros(400, 8, requires_grad=True)
    dec = SemanticDecoder(8, 32)
    opt = torch.optim.Adam([attrs, *dec.parameters()], lr=0.02)
    history = []
    for _ in range(150):
        terms = sac_losses(dec(attrs), ids, emb)
        loss = terms["cosine"] + 0.1 * terms["contrast"] + 0.1 * terms["variance"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    assert history[-1]["cosine"] < 0.1 * history[0]["cosine"] and history[-1]["contrast"] < history[0]["contrast"]
    assert history[-1]["variance"] < 0.01
    assert ((dec(attrs) @ emb.T).argmax(-1) == ids).all()


def test_vote_in_masks_hand_made_case():
    # 2 x 4 image, two masks; logits favour class 1 on 3 of mask 0's pixels, class 2 on one.
    logits = torch.full((2, 4, 3), -5.0)
    logits[0, 0, 1] = logits[0, 1, 1] = logits[1, 0, 1] = 5.0
    logits[1, 1, 2] = 5.0
    logits[0, 2, 2] = logits[0, 3, 2] = 5.0  # mask 1: class 2
    logits[1, 2] = 0.0  # unconfident pixel inside mask 1
    logits[1, 3, 0] = 9.0  # void row wins here but is never chosen
    mask_ids = torch.tensor([[0, 0, 1, 1], [0, 0, 1, -1]])
    out = vote_in_masks(logits, mask_ids, confidence=0.6)
    assert out.tolist() == [[1, 1, 2, 2], [1, 1, -1, -1]]
    # the void row leads on every pixel; after it class 2 on two pixels, class 1 on one (softmax 1 / (1 + e^-10))
    void_first = torch.tensor([[[9.0, -5.0, 5.0], [9.0, -5.0, 5.0], [9.0, 5.0, -5.0]]])
    one_mask = torch.zeros(1, 3, dtype=torch.long)
    assert vote_in_masks(void_first, one_mask, 0.6).tolist() == [[2, 2, 2]]
    assert vote_in_masks(void_first, one_mask, 0.99999).tolist() == [[-1, -1, -1]]  # 0.99995: not confident
    assert vote_in_masks(void_first, one_mask, 0.6, ignore_class=None).tolist() == [[0, 0, 0]]
    assert vote_in_masks(void_first, one_mask, 0.6, ignore_class=2).tolist() == [[0, 0, 0]]
    assert vote_in_masks(void_first[..., :1], one_mask, 0.6).tolist() == [[-1, -1, -1]]  # void alone: no class


def test_miou_against_a_hand_computed_example():
    gt = np.array([[1, 1, 2, 2], [1, 1, 0, 3]])
    pred = np.array([[1, 2, 2, 2], [1, 1, 3, 3]])
    miou, acc = semantic_scores(pred, gt, n_classes=4)
    # class 1: TP 3, FN 1 -> 3/4; class 2: TP 2, FP 1 -> 2/3; class 3: TP 1 -> 1/1 (the gt-0 pixel is ignored)
    assert miou == pytest.approx((3 / 4 + 2 / 3 + 1) / 3) and acc == pytest.approx(6 / 7)
    assert np.isnan(semantic_scores(pred, np.zeros_like(gt), 4)[0])


def test_semantic_mapping_beats_the_teacher_and_self_training_helps(synth_dir, class_embeddings):
    ds = open_dataset(synth_dir)
    teacher = SimulatedTeacher(class_embeddings)
    scores = {}
    for name, every, split in (("sac", 0, True), ("sac+3dcs", 3, False), ("sac+3dcs split", 3, True)):
        training = SemanticTrainingConfig(sem_dim=16, dcs_start=15, dcs_every=every, dcs_split_masks=split,
                                          dcs_decoder_share=1.0, sem_replay_pixels=0)
        trainer = SemanticTrainer(training, teacher, class_embeddings)
        mapper = IncrementalMapper(MapperConfig(iters_per_keyframe=15, w_ssim=0.0), trainer=trainer)
        for i in ds.train_indices:
            mapper.add_frame(ds[i])
        snap, vals = mapper.snapshot(), []
        with torch.no_grad():
            for i in range(len(ds)):  # all views: the small scene has only 2 held out
                f = ds[i]
                decoded = snap.decoder(snap.gaussians.render(f.camera).semantics)
                pred = (decoded @ class_embeddings[1:].T).argmax(-1).numpy() + 1
                vals.append(semantic_scores(pred, f.labels, len(ds.classes))[0])
        scores[name] = np.nanmean(vals)
        if every:
            assert snap.trainer_counters["pseudo_label_rounds"] == 3  # after keyframes 15, 18 and 21 of 22
    teacher_scores = []
    for i in range(len(ds)):
        obs = teacher(ds[i])
        ids = obs.mask_ids.numpy()
        teacher_scores.append(semantic_scores(np.where(ids >= 0, obs.classes.numpy()[ids.clip(0)], 0), ds[i].labels,
                                              len(ds.classes))[0])
    # This 80x60, 22-frame scene is too small for SAC alone to beat the teacher by much (the default room
    # does: benchmarks/semantics.py); self-training must lift the map well above both. Rounds start once 15 of
    # the 22 keyframes are mapped: started at 11, the half-built map's mistakes were voted into pseudo-labels
    # and kept (teacher seeds 0 / 1 / 2: SAC 0.54 / 0.61 / 0.58; 3DCS from keyframe 11 0.61 / 0.62 / 0.47,
    # from 15 0.67 / 0.66 / 0.75; splitting masks by the render's segments within 0.01 of whole masks).
    # The pseudo-labels train the decoder in full here: with the default dcs_decoder_share 0.2 (for walks through
    # rooms, see README) 3DCS's 7 late keyframes barely move this scene (seeds 0 / 1 / 2: share 1 0.67 / 0.52 /
    # 0.67, 0.5 0.63 / 0.53 / 0.58, 0.2 0.54 / 0.53 / 0.56). Decoder replay is off for the same reason: measured
    # without it; with it (seed 0) SAC 0.56, 3DCS 0.66, split 0.64 (tests/test_fusion.py checks replay's own gain).
    teacher_miou = np.nanmean(teacher_scores)
    for name in ("sac+3dcs", "sac+3dcs split"):
        assert scores[name] > teacher_miou + 0.08 and scores[name] > scores["sac"] + 0.08, scores


def test_semantic_cli_map_eval_query_and_saved_model(synth_dir, tmp_path, capsys):
    import json

    from clipgs.cli import main
    from clipgs.mapping.ply import MapFileError
    from clipgs.semantics.model import load_semantics, semantics_path

    cfg = tmp_path / "c.yaml"
    cfg.write_text("iters_per_keyframe: 8\nw_ssim: 0.0\nsem_dim: 8\ndcs_start: 11\ndcs_every: 5\n")
    out = tmp_path / "m.ply"
    assert main(["map", str(synth_dir), "--out", str(out), "--config", str(cfg), "--semantics", "simulated"]) == 0
    model = load_semantics(out)
    assert model.decoder.sem_dim == 8 and model.vocabulary[5] == "chair"
    assert model.text_encoder["model"] == "clipgs-tiny"
    assert main(["eval", str(out), str(synth_dir), "--semantic", "--json", str(tmp_path / "e.json")]) == 0
    sem = json.loads((tmp_path / "e.json").read_text())["semantic"]
    assert 0 <= sem["map_miou"] <= 1 and 0 <= sem["teacher_miou"] <= 1 and sem["views"] == 2
    assert (tmp_path / "semantic_panels" / "semantic_5.png").is_file()
    args = ["query", str(out), "chair", "--data", str(synth_dir), "--view", "5", "--out", str(tmp_path / "q")]
    assert main(args) == 0
    printed = capsys.readouterr().out  # this weak map may or may not select chair Gaussians; both are answers
    assert "'chair':" in printed and ("3D:" in printed or "no Gaussians above" in printed)
    assert (tmp_path / "q" / "mask.png").is_file() and (tmp_path / "q" / "overlay.png").is_file()
    assert main(["query", str(out), "   "]) == 2
    assert "empty query" in capsys.readouterr().err
    semantics_path(out).write_bytes(b"garbage")
    with pytest.raises(MapFileError, match="unreadable semantic model"):
        load_semantics(out)
    assert main(["query", str(out), "chair"]) == 2


def test_clip_fast_and_precomputed_sources(synth_dir, tmp_path):
    from clipgs.semantics.clip_sources import ClipFastSource, MaskCLIPEmbedder, PrecomputedSource, write_precomputed

    ds = open_dataset(synth_dir)
    frame = ds[2]
    source = ClipFastSource(MaskCLIPEmbedder("clipgs-tiny"))
    obs = source(frame)
    ids = obs.mask_ids.numpy()
    assert ids.shape == (60, 80) and ids.max() + 1 == len(obs.embeddings) and 5 <= len(obs.embeddings) <= 400
    assert set(np.unique(ids)) == set(range(len(obs.embeddings)))  # compact ids, every pixel has depth here
    torch.testing.assert_close(obs.embeddings.norm(dim=-1), torch.ones(len(obs.embeddings)))
    again = ClipFastSource(MaskCLIPEmbedder("clipgs-tiny"))(frame)
    assert torch.equal(again.mask_ids, obs.mask_ids) and torch.allclose(again.embeddings, obs.embeddings)
    # Segments follow objects: most masks lie within one ground-truth instance.
    purity = [np.bincount(frame.instances[ids == m]).max() / (ids == m).sum() for m in range(len(obs.embeddings))]
    assert np.median(purity) > 0.9
    holed = ds[2]
    holed.depth[:10] = 0.0
    assert (source(holed).mask_ids[:10] == -1).all()  # no depth, no supervision
    write_precomputed(obs, tmp_path / "sem", frame.index)
    loaded = PrecomputedSource(tmp_path / "sem")(frame)
    assert torch.equal(loaded.mask_ids, obs.mask_ids) and torch.allclose(loaded.embeddings, obs.embeddings)
    with pytest.raises(FileNotFoundError, match="no precomputed semantics for frame 3"):
        PrecomputedSource(tmp_path / "sem")(ds[3])
    with pytest.raises(FileNotFoundError, match="run clipgs extract"):
        PrecomputedSource(tmp_path / "nowhere")


def test_extract_then_map_from_precomputed(synth_dir, tmp_path, capsys):
    from clipgs.cli import main
    from clipgs.semantics.model import load_semantics

    assert main(["extract", str(synth_dir), "--out", str(tmp_path / "sem")]) == 0
    assert len(list((tmp_path / "sem").glob("frame_*.npz"))) == 22
    cfg = tmp_path / "c.yaml"
    cfg.write_text("iters_per_keyframe: 2\nw_ssim: 0.0\nsem_dim: 4\n")
    args = ["map", str(synth_dir), "--out", str(tmp_path / "m.ply"), "--config", str(cfg), "--semantics",
            "precomputed", "--semantics-dir", str(tmp_path / "sem"), "--max-frames", "3"]
    assert main(args) == 0
    model = load_semantics(tmp_path / "m.ply")
    assert model.notes["source"] == "precomputed" and model.decoder.sem_dim == 4
    assert main([*args[:-4], "--max-frames", "2"]) == 2  # precomputed without --semantics-dir
    assert "needs semantics_dir (CLI: --semantics-dir)" in capsys.readouterr().err


def _tiny_sam():
    """A random-initialised segment-anything model small enough for tests (4.8 M parameters)."""
    import_torchvision()
    from segment_anything.build_sam import _build_sam

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _build_sam(encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=1, encoder_global_attn_indexes=[0])


def test_clip_sam_source_on_tiny_models(synth_dir):
    from clipgs.semantics.clip_sources import ClipSamSource, MaskCLIPEmbedder, SamSegmenter

    frame = open_dataset(synth_dir)[2]
    # Random weights give uncalibrated scores: accept every mask so there is something to embed.
    segmenter = SamSegmenter(sam=_tiny_sam(), points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    source = ClipSamSource(MaskCLIPEmbedder("clipgs-tiny"), segmenter)
    obs = source(frame)
    ids = obs.mask_ids.numpy()
    assert ids.shape == frame.depth.shape and len(obs.embeddings) >= 1 and obs.embeddings.shape[1] == 64
    assert set(np.unique(ids[ids >= 0])) == set(range(len(obs.embeddings)))
    torch.testing.assert_close(obs.embeddings.norm(dim=-1), torch.ones(len(obs.embeddings)))
    again = source(frame)
    assert torch.equal(again.mask_ids, obs.mask_ids) and torch.allclose(again.embeddings, obs.embeddings)


def test_overlapping_masks_to_ids_keep_nested_parts_and_largest():
    from clipgs.semantics.clip_sources import largest_masks
    from clipgs.semantics.segmentation import masks_to_ids

    big = np.zeros((6, 6), bool)
    big[:, :4] = True
    part = np.zeros((6, 6), bool)
    part[1:3, 1:3] = True
    ids = masks_to_ids([part, big], (6, 6))  # order given does not matter: larger first, part on top
    assert (ids[1:3, 1:3] == 1).all() and (ids[big & ~part] == 0).all() and (ids[:, 4:] == -1).all()
    raw = np.array([[5, 5, 5, 2], [9, 9, -1, 2]])
    np.testing.assert_array_equal(largest_masks(raw, 2), [[0, 0, 0, 1], [-1, -1, -1, 1]])
    np.testing.assert_array_equal(largest_masks(raw, 9), [[0, 0, 0, 1], [2, 2, -1, 1]])


def test_semantic_factory_needs_local_weights(tmp_path):
    from clipgs.semantics.factory import SemanticSettings, build_semantics

    assert build_semantics(SemanticSettings(semantic_source="none")).source is None
    with pytest.raises(ValueError, match="needs CLIP weights for ViT-B-16: set clip_weights"):
        build_semantics(SemanticSettings())  # the default real model without a checkpoint
    with pytest.raises(FileNotFoundError, match="CLIP weights not found"):
        build_semantics(SemanticSettings(clip_model="ViT-B-16", clip_weights=str(tmp_path / "missing.pt")))
    with pytest.raises(ValueError, match="semantic_source must be one of none, clip_fast, clip_dense, clip_sam"):
        SemanticSettings(semantic_source="sam")
    sam = SemanticSettings(semantic_source="clip_sam", clip_model="clipgs-tiny")
    with pytest.raises(ValueError, match="clip_sam needs a local SAM checkpoint for vit_b"):
        build_semantics(sam)
    sam = sam.replace(sam_weights=str(tmp_path / "sam.pth"))
    with pytest.raises(FileNotFoundError, match="SAM weights not found"):
        build_semantics(sam)
    (tmp_path / "sam.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a segment-anything vit_b checkpoint"):
        build_semantics(sam)
    with pytest.raises(ValueError, match="vocabulary is empty"):
        SemanticSettings(clip_model="clipgs-tiny", vocabulary=" , ")
    stack = build_semantics(SemanticSettings(clip_model="clipgs-tiny", vocabulary="chair, red mug"))
    assert stack.classes == ["void", "chair", "red mug"] and stack.vocabulary.shape == (3, 64)
    assert torch.equal(stack.vocabulary[0], torch.zeros(64)) and stack.source is not None


def test_a_failing_semantic_source_costs_semantics_not_geometry(synth_dir):
    def broken(frame):
        raise RuntimeError("SAM ran out of memory")

    trainer = SemanticTrainer(SemanticTrainingConfig(sem_dim=4), broken)
    mapper = IncrementalMapper(MapperConfig(iters_per_keyframe=1, w_ssim=0.0), trainer=trainer)
    ds = open_dataset(synth_dir)
    assert mapper.add_frame(ds[0]) == "keyframe"
    snap = mapper.snapshot()
    assert len(snap) > 0 and snap.gaussians.sem_dim == 4 and mapper.keyframes[0].annotation is None
    assert snap.decoder is None and snap.trainer_counters["semantic_failures"] == {
        "RuntimeError: SAM ran out of memory": 1}


def test_decoder_free_baseline_is_the_full_embedding(tmp_path):
    from clipgs.semantics.model import SemanticModel, load_semantics, save_semantics

    with pytest.raises(ValueError, match="sem_dim must equal the embedding size 64"):
        SemanticDecoder(16, 64, hidden=0)
    dec = SemanticDecoder(64, 64, hidden=0)
    x = torch.randn(5, 64)
    torch.testing.assert_close(dec(x), torch.nn.functional.normalize(x, dim=-1))
    assert list(dec.parameters()) == []
    save_semantics(SemanticModel(dec, {"model": "clipgs-tiny"}, ["void", "a"]), tmp_path / "m.ply")
    assert load_semantics(tmp_path / "m.ply").decoder.hidden == 0


def test_novel_views_between_keyframes_get_pseudo_labels_and_train_semantics_only(synth_dir, class_embeddings):
    from clipgs.semantics.self_training import novel_cameras

    ds = open_dataset(synth_dir)
    cams = novel_cameras([ds[0].camera, ds[4].camera], 3)
    assert len(cams) == 3
    np.testing.assert_allclose(cams[1].world_from_camera[:3, 3],
                               (ds[0].world_from_camera[:3, 3] + ds[4].world_from_camera[:3, 3]) / 2, atol=1e-9)
    teacher = SimulatedTeacher(class_embeddings, TeacherCorruption(0.0, 0.0, 0.0))
    training = SemanticTrainingConfig(sem_dim=8, dcs_every=0, dcs_novel_views=1, dcs_novel_steps=0,
                                      dcs_confidence=0.0)
    trainer = SemanticTrainer(training, teacher, class_embeddings)
    mapper = IncrementalMapper(MapperConfig(iters_per_keyframe=20, w_ssim=0.0, kf_translation_m=0.0), trainer=trainer)
    for i in range(4):
        mapper.add_frame(ds[i])
    assert trainer.novel_views == [] and trainer.pseudo_label_rounds == 0  # dcs_every 0: no rounds on its own
    trainer.refresh_pseudo_labels(mapper)
    assert len(trainer.novel_views) == 3  # one between each consecutive pair of the 4 keyframes
    for view in trainer.novel_views:
        labels = view.pseudo_labels
        assert labels.shape == (60, 80) and int(labels.max()) < len(class_embeddings) and (labels != 0).all()
        # Labelled pixels lie where the map is opaque (rendered segments stand in for 2D masks).
        assert bool((mapper.render(view.camera).alpha[labels >= 0] > 0.5).all())
    before = {k: v.detach().clone() for k, v in mapper.map.gaussians.tensors().items()}
    trainer.config = training.replace(dcs_novel_steps=1)
    trainer.end_round(mapper)
    after = mapper.map.gaussians.tensors()
    assert not torch.equal(after["semantics"], before["semantics"])
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh0"):
        assert torch.equal(after[name], before[name]), name


def test_a_spread_3dcs_round_does_a_share_per_keyframe_and_labels_what_a_whole_round_does(synth_dir, class_embeddings):
    ds = open_dataset(synth_dir)
    teacher = SimulatedTeacher(class_embeddings, TeacherCorruption(0.0, 0.0, 0.0))
    runs = {}
    for spread in (False, True):
        training = SemanticTrainingConfig(sem_dim=8, dcs_start=4, dcs_every=3, dcs_novel_views=1, dcs_novel_steps=0,
                                          dcs_spread=spread)
        trainer = SemanticTrainer(training, teacher, class_embeddings)
        mapper = IncrementalMapper(MapperConfig(iters_per_keyframe=5, kf_translation_m=0.0), trainer=trainer)
        relabelled: list[int] = []

        def counted(m, kf, cam, views, original=trainer._relabel, log=relabelled):
            log.append(kf.index)
            return original(m, kf, cam, views)

        trainer._relabel = counted
        per_keyframe = []
        for i in range(7):  # keyframes 1..7: a round is due after the 4th and the 7th
            before = len(relabelled)
            mapper.add_frame(ds[i])
            per_keyframe.append(len(relabelled) - before)
        runs[spread] = (per_keyframe, trainer.pseudo_label_rounds, sorted(relabelled[:4]))
    whole, spread = runs[False], runs[True]
    assert whole[0] == [0, 0, 0, 4, 0, 0, 7] and whole[1] == 2  # a whole round at once
    assert spread[0] == [0, 0, 0, 2, 2, 0, 3]  # ceil(4 / 3) per keyframe; the next round starts at the 7th
    assert spread[1] == 1 and spread[2] == whole[2]  # the same keyframes, one round finished

