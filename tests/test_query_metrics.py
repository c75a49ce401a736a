"""Query metrics against hand-computed examples, and end to end on a small semantic map."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from clipgs.semantics.query_metrics import (
    QueryScores,
    consensus_localisation,
    consensus_objects_3d,
    consensus_scores,
    localisation_hit,
    mask_iou,
    match_objects,
)


def test_mask_iou_by_hand():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2, :2] = True  # 4 pixels
    b[1:3, 1:3] = True  # 4 pixels, 1 shared
    assert mask_iou(a, b) == 1 / 7
    assert mask_iou(a, a) == 1.0 and mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0


def test_consensus_scores_by_hand():
    """Every ground-truth object labelled with its consensus class, scored per held-out view as a map is."""
    view = SimpleNamespace(instances=np.array([[1, 1], [2, 2]]), labels=np.array([[1, 1], [2, 2]]))
    ds = type("Views", (), {"test_indices": [0], "classes": ["void", "a", "b"], "__getitem__": lambda s, i: view})()
    assert consensus_scores(ds, {1: 1, 2: 2}) == (1.0, 1.0)
    assert consensus_scores(ds, {1: 1, 2: 1}) == (0.25, 0.5)  # class a: IoU 2/4, class b: 0/2
    assert consensus_scores(ds, {1: 2, 7: 1}) == (0.0, 0.0)  # object 2 unread (void); 7 is in no held-out view


def test_consensus_localisation_by_hand():
    """Objects labelled with their consensus class, queried by class name: where several objects read as the
    class, the read pixel nearest their middle decides; a class read nowhere is not found."""
    inst = np.zeros((14, 14), np.int64)  # three 3x3 objects, farther apart than the 5-pixel window
    inst[1:4, 1:4], inst[9:12, 9:12], inst[1:4, 9:12] = 1, 2, 3
    labels = np.where(inst == 3, 2, np.minimum(inst, 2))  # objects 1 (class a), 2 and 3 (class b)
    view = SimpleNamespace(instances=inst, labels=labels)
    ds = type("Views", (), {"test_indices": [0], "__getitem__": lambda s, i: view})()
    assert consensus_localisation(ds, {1: 1, 2: 2, 3: 2}) == 1.0
    assert consensus_localisation(ds, {1: 2, 2: 2, 3: 2}) == 0.5  # a read nowhere; b found (on object 3)
    assert consensus_localisation(ds, {1: 1, 2: 1, 3: 1}) == 0.0  # a: object 3 is nearest the middle; b nowhere


def test_consensus_objects_3d_by_hand():
    """Each object class answered with the objects its consensus reads as it, at their true centroids, matched
    as the map's returned objects are (within 0.3 m, the most observed first); a wall read as a class counts."""
    pts = lambda x, n: np.full((n, 3), [x, 0.0, 0.0])  # noqa: E731  n points at (x, 0, 0)
    points = {1: pts(0.0, 5), 2: pts(2.0, 5), 3: pts(4.0, 9), 4: pts(8.0, 50)}
    owner = {1: 1, 2: 1, 3: 2, 4: 3}  # chairs 1 and 2, table 3, the wall 4
    classes = ["void", "chair", "table", "wall"]
    assert consensus_objects_3d(points, owner, {1: 1, 2: 1, 3: 2, 4: 3}, classes) == (1.0, 1.0)
    # chair 2 read as table, the wall as chair: chair returns 1 and 4 (1 right), table 2 and 3 (3 right)
    assert consensus_objects_3d(points, owner, {1: 1, 2: 2, 3: 2, 4: 1}, classes) == (0.5, 2 / 3)
    assert consensus_objects_3d(points, owner, {}, classes) == (0.0, 0.0)


def test_localisation_hit_uses_the_most_relevant_region():
    rel = np.zeros((12, 12))
    rel[8:11, 4:7] = 0.9  # a relevant region ...
    rel[0, 0] = 1.0  # ... and one stray pixel: a raw argmax would pick it
    truth = np.zeros((12, 12), bool)
    truth[8:11, 3:8] = True
    assert localisation_hit(rel, truth) and not localisation_hit(rel, ~truth)
    assert not localisation_hit(rel, truth, window=1)  # the raw argmax: the stray pixel
    tied = np.zeros((12, 12))
    tied[:, 6:] = 1.0  # saturated over half the image: the middle of it, not its first pixel, decides
    right = np.zeros((12, 12), bool)
    right[3:9, 7:11] = True
    assert localisation_hit(tied, right)
    assert not localisation_hit(np.zeros((12, 12)), right)  # nothing relevant anywhere: not found


def test_greedy_matching_within_radius_each_truth_once():
    truth = [np.array([0.0, 0, 0]), np.array([2.0, 0, 0])]
    found = [np.array([0.1, 0, 0]), np.array([0.05, 0, 0]), np.array([2.2, 0, 0]), np.array([5.0, 0, 0])]
    errors = match_objects(found, truth, radius_m=0.3)
    assert np.allclose(errors, [0.1, 0.2])  # the second near-duplicate finds the first truth taken
    assert match_objects([], truth) == [] and match_objects(found, []) == []


def test_summary_by_hand():
    s = QueryScores(iou={"chair": [0.5, 1.0], "table": [0.0]}, hits={"chair": [True, True], "table": [False]},
                    returned={"chair": 3, "table": 1}, present={"chair": 2, "table": 1},
                    errors={"chair": [0.1, 0.3], "table": []})
    out = s.summary()
    assert out["query_miou"] == (0.75 + 0.0) / 2 and out["localisation_acc"] == 0.5
    assert out["precision_3d"] == 2 / 4 and out["recall_3d"] == 2 / 3 and np.isclose(out["median_error_m"], 0.2)


def test_eval_semantic_prints_and_saves_query_scores(synth_dir, tmp_path, capsys):
    import json

    from clipgs.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("iters_per_keyframe: 6\nw_ssim: 0.0\nsem_dim: 8\ndcs_every: 0\n")
    out = tmp_path / "m.ply"
    assert main(["map", str(synth_dir), "--out", str(out), "--config", str(cfg), "--semantics", "simulated",
                 "--teacher", "uniform"]) == 0
    assert main(["eval", str(out), str(synth_dir), "--semantic", "--json", str(tmp_path / "e.json")]) == 0
    q = json.loads((tmp_path / "e.json").read_text())["semantic"]["queries"]
    assert 0 <= q["query_miou"] <= 1 and 0 <= q["localisation_acc"] <= 1 and q["classes_2d"] > 3
    assert 0 <= q["precision_3d"] <= 1 and 0 <= q["recall_3d"] <= 1 and q["objects_3d"] > 3
    assert "localisation" in capsys.readouterr().out


def test_teacher_consensus_sums_mask_embeddings_over_views_by_pixels():
    import torch

    from clipgs.semantics.query_metrics import teacher_consensus
    from clipgs.semantics.sources import MaskEmbeddings

    vocab = torch.eye(4)[:3]  # void, class 1, class 2 (unit rows)
    inst = np.array([[1, 1], [1, 1]], np.int32)  # one object filling a 2x2 view
    # Per view, the teacher's masks on it: view 0 reads 3 pixels as class 2 and 1 as class 1; views 1 and 2
    # read all 4 pixels as 0.8 class 1 + 0.6 class 2. Summed by pixels: class 1 = 1 + 2 * 4 * 0.8 = 7.4,
    # class 2 = 3 + 2 * 4 * 0.6 = 7.8 -> class 2.
    views = [MaskEmbeddings(torch.tensor([[0, 0], [0, 1]]), torch.tensor([[0.0, 0, 1, 0], [0, 1, 0, 0]]),
                            torch.tensor([2, 1])),
             *[MaskEmbeddings(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0.0, 0.8, 0.6, 0]]),
                              torch.tensor([1]))] * 2]
    frames = [SimpleNamespace(index=i, instances=inst) for i in range(3)]
    ds = type("DS", (), {"train_indices": [0, 1, 2], "__getitem__": lambda self, i: frames[i]})()
    teacher = lambda frame: views[frame.index]  # noqa: E731
    assert teacher_consensus(ds, teacher, vocab) == {1: 2}
    views[0] = MaskEmbeddings(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0.0, 1, 0, 0]]), torch.tensor([1]))
    assert teacher_consensus(ds, teacher, vocab) == {1: 1}  # 4 + 6.4 = 10.4 against 4.8


def test_map_object_classes_votes_by_surface():
    import torch

    from clipgs.mapping import GaussianMap
    from clipgs.semantics.query_metrics import map_object_classes

    # Object 7's points at x = 0; three Gaussians on it: two small ones reading class 1, one large reading class 2
    # (its area outweighs both); one more reading class 1 far away; object 8 has no Gaussian near it.
    means = torch.tensor([[0.0, 0, 0], [0.0, 0.01, 0], [0.0, 0.02, 0], [3.0, 0, 0]])
    log_scales = torch.log(torch.tensor([[0.01, 0.01, 0.001], [0.01, 0.01, 0.001], [0.05, 0.05, 0.001],
                                         [0.5, 0.5, 0.001]]))
    sem = torch.tensor([[1.0, 0], [1.0, 0], [0.0, 1], [1.0, 0]])
    gmap = GaussianMap(means, torch.tensor([[1.0, 0, 0, 0]]).expand(4, 4), log_scales, torch.full((4,), 5.0),
                       torch.zeros(4, 3), sem)
    decoder = type("Identity", (), {"similarity": lambda self, x, texts: x @ texts.T})()
    vocab = torch.tensor([[0.0, 0], [1.0, 0], [0.0, 1]])
    points = {7: np.array([[0.0, 0, 0], [0.0, 0.02, 0]]), 8: np.array([[1.0, 1, 1]])}
    assert map_object_classes(gmap, decoder, vocab, points) == {7: 2, 8: 0}
    gmap.log_scales[2] = torch.log(torch.tensor([0.01, 0.01, 0.001]))  # now 2 small votes for 1 against 1
    assert map_object_classes(gmap, decoder, vocab, points) == {7: 1, 8: 0}


def test_labels_through_map_scores_the_geometry_carrying_given_classes(synth_dir):
    """A map seeded from a held-out view carries the true classes of the objects nearest each Gaussian: its own
    view scores high; carrying one class everywhere scores what that one class right gives."""
    from clipgs.data.dataset import open_dataset
    from clipgs.mapping.gaussian_map import GaussianMap
    from clipgs.semantics.query_metrics import labels_through_map, nearest_instances, object_points

    ds = open_dataset(synth_dir)
    view = ds.test_indices[0]
    gmap = GaussianMap.from_frame(ds[view], initial_opacity=0.99, scale_factor=0.6)  # little spill over edges
    points, owner = object_points(ds, stride=1)
    instances = nearest_instances(gmap, points)
    truth = labels_through_map(gmap, ds, instances, owner, indices=[view])
    assert truth > 0.7
    labels = ds[view].labels
    one = int(np.bincount(labels[labels > 0]).argmax())  # the view's largest class, carried by every Gaussian
    assert labels_through_map(gmap, ds, instances, dict.fromkeys(owner, one), indices=[view]) < 0.6 * truth
    assert labels_through_map(gmap, ds, instances, {}, indices=[view]) == 0.0  # void everywhere: nothing right
