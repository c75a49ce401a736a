"""Field-standard scores of text queries against ground truth: 2D (per-query IoU, LERF-style localisation)
and 3D (precision / recall of returned objects, centroid error).

2D, per held-out view and per class present in it: the query's mask IoU with the class's pixels, and a hit when
the most relevant pixel falls inside them (localisation accuracy, as LERF reports it). 3D, per object class: a
returned object counts when its centroid lies within ``radius_m`` of a ground-truth instance of that class
not matched yet (greedy, strongest object first); precision = counted / returned, recall = counted / present.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from clipgs.data.dataset import SequenceDataset
from clipgs.eval.metrics import semantic_scores
from clipgs.geometry import unproject_depth
from clipgs.mapping.gaussian_map import GaussianMap
from clipgs.semantics.instances import QueryInstance
from clipgs.semantics.model import SemanticModel
from clipgs.semantics.pipeline import coherent_labels
from clipgs.semantics.query import footprint_areas, negative_names, query_map
from clipgs.semantics.sources import STUFF
from clipgs.semantics.text import TextEncoder


def mask_iou(mask: np.ndarray, truth: np.ndarray) -> float:
    """IoU of two (H, W) bool masks (1.0 when both are empty)."""
    union = np.logical_or(mask, truth).sum()
    return float(np.logical_and(mask, truth).sum() / union) if union else 1.0


def localisation_hit(relevancy: np.ndarray, truth: np.ndarray, window: int = 5) -> bool:
    """LERF's localisation: does the most relevant pixel of (H, W) ``relevancy`` fall inside ``truth``?

    Relevancy is box-averaged over ``window`` pixels first, and remaining ties go to the pixel nearest their
    centre: relevancy saturates at 1 over whole objects, and a raw argmax would pick the first of many tied
    pixels (the top-left one) rather than the middle of a region."""
    from scipy.ndimage import uniform_filter

    smooth = uniform_filter(np.asarray(relevancy, np.float64), size=window, mode="constant") if window > 1 \
        else np.asarray(relevancy, np.float64)
    if not smooth.max() > 0:  # nothing relevant anywhere: not found (every pixel would tie)
        return False
    ys, xs = np.nonzero(smooth >= smooth.max() - 1e-9)  # still tied: the one nearest the ties' centre
    k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    return bool(truth[ys[k], xs[k]])


def match_objects(found: list[np.ndarray], truth: list[np.ndarray], radius_m: float = 0.3) -> list[float]:
    """Greedy matching, strongest found object first: each takes the nearest unmatched ground-truth centroid
    within ``radius_m``. Returns the matched centroid errors (m), one per matched object."""
    free = list(range(len(truth)))
    errors = []
    for centroid in found:
        if not free:
            break
        dist = [float(np.linalg.norm(centroid - truth[j])) for j in free]
        best = int(np.argmin(dist))
        if dist[best] <= radius_m:
            errors.append(dist[best])
            free.pop(best)
    return errors


@dataclass
class QueryScores:
    """Per class name: 2D IoUs and localisation hits over views; 3D counts and matched errors."""

    iou: dict[str, list[float]] = field(default_factory=dict)
    hits: dict[str, list[bool]] = field(default_factory=dict)
    returned: dict[str, int] = field(default_factory=dict)
    present: dict[str, int] = field(default_factory=dict)
    errors: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict:
        """query_miou, localisation_acc (2D, mean over classes); precision, recall, median_error_m (3D)."""
        matched = sum(len(v) for v in self.errors.values())
        all_errors = [e for v in self.errors.values() for e in v]
        return {"query_miou": float(np.mean([np.mean(v) for v in self.iou.values()])) if self.iou else float("nan"),
                "localisation_acc": float(np.mean([np.mean(v) for v in self.hits.values()])) if self.hits
                else float("nan"),
                "precision_3d": matched / max(1, sum(self.returned.values())),
                "recall_3d": matched / max(1, sum(self.present.values())),
                "median_error_m": float(np.median(all_errors)) if all_errors else float("nan"),
                "classes_2d": len(self.iou), "objects_3d": sum(self.present.values())}


def object_points(ds: SequenceDataset, stride: int = 3) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    """Instance id -> (M, 3) m its pixels' points over the training frames (every ``stride``-th), and instance
    id -> class id (the majority of its pixels' labels)."""
    points: dict[int, list[np.ndarray]] = {}
    owner: dict[int, int] = {}
    for i in ds.train_indices[::stride]:
        f = ds[i]
        if f.instances is None or f.labels is None:
            raise ValueError(f"{ds.root}: frame {i} has no instance / class labels to score queries against")
        pts, v, u = unproject_depth(f.depth, f.K, f.world_from_camera)
        inst, cls = f.instances[v, u], f.labels[v, u]
        for k in np.unique(inst[inst > 0]):
            points.setdefault(int(k), []).append(pts[inst == k])
            owner[int(k)] = int(np.bincount(cls[inst == k]).argmax())
    return {k: np.concatenate(chunks) for k, chunks in points.items()}, owner


def class_centroids(points: dict[int, np.ndarray], owner: dict[int, int],
                    classes: list[str]) -> dict[str, list[np.ndarray]]:
    """Class name -> centroids (3,) m of its object instances (``points``, ``owner``: :func:`object_points`)."""
    out: dict[str, list[np.ndarray]] = {}
    for k, pts in points.items():
        out.setdefault(classes[owner[k]], []).append(pts.mean(0))
    return out


@torch.no_grad()
def teacher_consensus(ds: SequenceDataset, teacher, vocabulary: Tensor) -> dict[int, int]:
    """Instance id -> the class (argmax cosine over ``vocabulary`` rows 1..) of the sum of the teacher's mask
    embeddings over the object's pixels in every training view: what the best fusion of this teacher's views
    could say about each object (an object its teacher reads as another class in most views stays wrong)."""
    sums: dict[int, Tensor] = {}
    for i in ds.train_indices:
        f = ds[i]
        obs = teacher(f)
        ids = obs.mask_ids.numpy()
        for k in np.unique(f.instances[f.instances > 0]):
            m = ids[(f.instances == k) & (ids >= 0)]
            if m.size:
                counts = torch.from_numpy(np.bincount(m, minlength=len(obs.embeddings))).to(obs.embeddings)
                sums[int(k)] = sums.get(int(k), 0) + counts @ obs.embeddings
    return {k: int((v @ vocabulary[1:].T).argmax()) + 1 for k, v in sums.items()}


def read_as(instances: np.ndarray, class_of: dict[int, int]) -> np.ndarray:
    """(H, W) instance ids -> (H, W) int64 classes: ``class_of`` each instance, 0 (void) where it has none."""
    lut = np.zeros(max([int(instances.max()), *class_of]) + 1, np.int64)  # instance id -> class
    lut[list(class_of)] = list(class_of.values())
    return lut[instances]


def consensus_scores(ds: SequenceDataset, consensus: dict[int, int]) -> tuple[float, float]:
    """(mIoU, pixel accuracy) on the held-out views of labelling every ground-truth object with its teacher
    consensus class (:func:`teacher_consensus`): what voting the teacher's views per object scores, as evaluation
    scores a map (per image, class 0 ignored). Not a bound: a map can break an object's near tie the other way."""
    rows = []
    for i in ds.test_indices:
        f = ds[i]
        rows.append(semantic_scores(read_as(f.instances, consensus), f.labels, len(ds.classes)))
    return float(np.nanmean([r[0] for r in rows])), float(np.nanmean([r[1] for r in rows]))


def consensus_localisation(ds: SequenceDataset, consensus: dict[int, int]) -> float:
    """Localisation accuracy (as :func:`score_queries` measures a map's, mean over classes) of labelling every
    ground-truth object with its teacher consensus class: the query's relevancy is 1 on the objects read as its
    class, 0 elsewhere. Where other objects read as the class too, all tie: the read pixel nearest their middle
    decides, which may lie on any of them. What a map that fused this teacher's views per object would score."""
    hits: dict[int, list[bool]] = {}
    for i in ds.test_indices:
        f = ds[i]
        read = read_as(f.instances, consensus)
        for k in np.unique(f.labels[f.labels > 0]):
            hits.setdefault(int(k), []).append(localisation_hit((read == k).astype(np.float32), f.labels == k))
    return float(np.mean([np.mean(v) for v in hits.values()])) if hits else float("nan")


def consensus_objects_3d(points: dict[int, np.ndarray], owner: dict[int, int], consensus: dict[int, int],
                         classes: list[str], radius_m: float = 0.3) -> tuple[float, float]:
    """(3D precision, 3D recall), scored as :func:`score_queries` scores a map's, of answering each object class's
    query with the ground-truth objects its teacher consensus reads as that class (``points``, ``owner``:
    :func:`object_points`; the most observed first, each at its true centroid): what fusing the teacher's views per
    object would return. Objects of every class count as returned, walls and floors included; only object
    classes are queried, as for the map."""
    returned = matched = present = 0
    centroids = class_centroids(points, owner, classes)
    for k, name in enumerate(classes):
        truth = centroids.get(name, [])
        if k == 0 or name in STUFF or not truth:
            continue
        read = sorted((i for i in points if consensus.get(i) == k), key=lambda i: -len(points[i]))
        matched += len(match_objects([points[i].mean(0) for i in read], truth, radius_m))
        returned, present = returned + len(read), present + len(truth)
    return matched / max(1, returned), matched / max(1, present)


def nearest_instances(gmap: GaussianMap, points: dict[int, np.ndarray]) -> np.ndarray:
    """(N,) the ground-truth instance nearest to each Gaussian's mean (``points``: instance id -> (M, 3) m,
    :func:`object_points`)."""
    from scipy.spatial import cKDTree

    owners = np.concatenate([np.full(len(p), k) for k, p in points.items()])
    return owners[cKDTree(np.concatenate(list(points.values()))).query(gmap.means.detach().cpu().numpy())[1]]


@torch.no_grad()
def labels_through_map(gmap: GaussianMap, ds: SequenceDataset, instances: np.ndarray, class_of: dict[int, int],
                       indices: list[int] | None = None) -> float:
    """mIoU on held-out views (``indices``: these instead) of the map's own geometry carrying given classes:
    every Gaussian takes ``class_of`` its ground-truth instance (``instances`` (N,), :func:`nearest_instances`;
    0 = void where absent), the classes are composited one-hot and each pixel takes the largest share, then
    coherent labels and scores as evaluation does for the map. With each object's teacher consensus: what
    fusing the teacher's views per object would score through this geometry; with the true classes: what the
    geometry allows."""
    n = len(ds.classes)
    labels = torch.from_numpy(read_as(instances, class_of)).to(gmap.means.device)
    carrying = dataclasses.replace(gmap, semantics=torch.nn.functional.one_hot(labels, n).to(gmap.means.dtype))
    rows = []
    for i in ds.test_indices if indices is None else indices:
        f = ds[i]
        out = carrying.render(f.camera)
        shares = out.semantics[..., 1:]  # void carries no vote: a pixel only void Gaussians reach stays void
        read = torch.where((out.alpha > 0.5) & (shares.amax(-1) > 0), shares.argmax(-1) + 1, 0)
        rows.append(semantic_scores(coherent_labels(read, out).cpu().numpy(), f.labels, n)[0])
    return float(np.nanmean(rows))


@torch.no_grad()
def map_object_classes(gmap: GaussianMap, decoder, vocabulary: Tensor, points: dict[int, np.ndarray],
                       radius_m: float = 0.03) -> dict[int, int]:
    """Instance id -> the class most of the map's surface on the object reads as: votes of the Gaussians
    (opacity > 0.5) within ``radius_m`` of its points, weighted by footprint area; 0 where none is."""
    from scipy.spatial import cKDTree

    solid = (gmap.opacities > 0.5).cpu().numpy()
    means = gmap.means.detach().cpu().numpy()[solid]
    label = (decoder.similarity(gmap.semantics[solid], vocabulary[1:]).argmax(-1) + 1).cpu().numpy()
    area = footprint_areas(gmap)[solid].cpu().numpy()
    out = {}
    for k, pts in points.items():
        near = np.isfinite(cKDTree(pts).query(means, distance_upper_bound=radius_m)[0])
        out[k] = int(np.bincount(label[near], weights=area[near], minlength=len(vocabulary)).argmax()) \
            if near.any() else 0
    return out


@torch.no_grad()
def score_queries(gmap: GaussianMap, model: SemanticModel, ds: SequenceDataset, text: TextEncoder,
                  radius_m: float = 0.3, coherent: bool = False, objects: tuple | None = None) -> QueryScores:
    """Query every class name of the map's vocabulary (negatives: the other names) on the held-out views (2D)
    and in 3D, and score against ground truth (coherent: 2D masks by segment, see ``query_map``; objects:
    ``object_points(ds)`` if already at hand)."""
    names = model.vocabulary[1:]
    emb = dict(zip(names, text.encode(names)))
    negatives = {name: text.encode(negative_names(model.vocabulary, name)) for name in names}
    scores = QueryScores()
    for i in ds.test_indices:
        f = ds[i]
        for k, name in enumerate(names, start=1):
            truth = f.labels == k
            if not truth.any():
                continue
            answer = query_map(gmap, model.decoder, emb[name], negatives[name], f.camera, coherent=coherent)
            scores.iou.setdefault(name, []).append(mask_iou(answer.mask, truth))
            scores.hits.setdefault(name, []).append(localisation_hit(answer.relevancy, truth))
    truth3d = class_centroids(*(objects or object_points(ds)), list(ds.classes))
    for name in names:
        if name in STUFF or name not in truth3d:
            continue
        instances: list[QueryInstance] = query_map(gmap, model.decoder, emb[name], negatives[name], None).instances
        scores.returned[name], scores.present[name] = len(instances), len(truth3d[name])
        scores.errors[name] = match_objects([inst.centroid for inst in instances], truth3d[name], radius_m)
    return scores
