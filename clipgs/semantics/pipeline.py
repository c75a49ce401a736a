"""Semantic mapping end to end: teacher + vocabulary from a dataset, evaluation, labelled images."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from clipgs.data.dataset import SequenceDataset
from clipgs.data.images import labelled_classes_panel, write_image
from clipgs.eval.metrics import semantic_scores
from clipgs.mapping.gaussian_map import GaussianMap
from clipgs.render.api import RenderOutput
from clipgs.semantics.coherence import keep_large_pieces, rendered_segments, segment_majority
from clipgs.semantics.model import SemanticModel
from clipgs.semantics.realistic_teacher import RealisticCorruption, RealisticTeacher
from clipgs.semantics.sac import SemanticDecoder
from clipgs.semantics.sources import MaskEmbeddings, SimulatedTeacher, TeacherCorruption
from clipgs.semantics.text import TextEncoder


def vocabulary_embeddings(text: TextEncoder, classes: list[str]) -> Tensor:
    """(C, D): row 0 (void) zeros, then the text embeddings of the class names."""
    emb = text.encode(classes[1:])
    return torch.cat([torch.zeros(1, emb.shape[1]), emb])


Corruption = TeacherCorruption | RealisticCorruption
Teacher = SimulatedTeacher | RealisticTeacher
TEACHERS = ("realistic", "uniform")  # realistic: errs like SAM + CLIP (systematic); uniform: random per view


def make_teacher(vocab: Tensor, classes: list[str], corruption: Corruption) -> Teacher:
    """The simulated teacher a corruption describes (RealisticCorruption -> RealisticTeacher)."""
    if isinstance(corruption, RealisticCorruption):
        return RealisticTeacher(vocab, classes, corruption)
    return SimulatedTeacher(vocab, corruption)


def teacher_notes(corruption: Corruption) -> dict:
    """What a saved semantic model records of its teacher (``teacher_from_notes`` rebuilds it)."""
    kind = "realistic" if isinstance(corruption, RealisticCorruption) else "uniform"
    return {"kind": kind, **asdict(corruption)}


def teacher_from_notes(notes: dict, vocab: Tensor, classes: list[str]) -> Teacher:
    settings = dict(notes)
    kind = settings.pop("kind", "uniform")
    corruption = RealisticCorruption(**settings) if kind == "realistic" else TeacherCorruption(**settings)
    return make_teacher(vocab, classes, corruption)


def default_corruption(kind: str = "realistic", seed: int = 0, wrong_fraction: float = 0.3) -> Corruption:
    if kind not in TEACHERS:
        raise ValueError(f"teacher must be one of {', '.join(TEACHERS)}, got {kind!r}")
    return RealisticCorruption(seed=seed) if kind == "realistic" else \
        TeacherCorruption(wrong_fraction=wrong_fraction, seed=seed)


def simulated_setup(dataset: SequenceDataset, text_model: str = "clipgs-tiny",
                    corruption: Corruption | None = None) -> tuple[Teacher, TextEncoder, Tensor]:
    """Teacher, text encoder and vocabulary for a synthetic dataset (needs classes.txt and instances).
    Without a ``corruption``: the uniform teacher (random wrong class per view) with its defaults."""
    if not dataset.classes:
        raise ValueError(f"{dataset.root}: no classes.txt; the simulated teacher needs the class names")
    text = TextEncoder(text_model)
    vocab = vocabulary_embeddings(text, dataset.classes)
    return make_teacher(vocab, list(dataset.classes), corruption or TeacherCorruption()), text, vocab


def teacher_labels(obs: MaskEmbeddings) -> np.ndarray:
    """(H, W) class ids the simulated teacher gave (0 outside masks)."""
    ids = obs.mask_ids.numpy()
    return np.where(ids >= 0, obs.classes.numpy()[ids.clip(0)], 0)


@torch.no_grad()
def labels_from_render(out: RenderOutput, decoder: SemanticDecoder, vocabulary: Tensor,
                       coherent: bool = True) -> np.ndarray:
    """(H, W) int64 class ids (vocabulary rows; 0 = void where the map is empty) of a render with attributes.

    coherent: each segment of the render's colour + depth takes its pixels' majority class (see
    :mod:`clipgs.semantics.coherence`); False: every pixel its own argmax.
    """
    labels = pixel_labels(out, decoder, vocabulary)
    return (coherent_labels(labels, out) if coherent else labels).cpu().numpy()


@torch.no_grad()
def pixel_labels(out: RenderOutput, decoder: SemanticDecoder, vocabulary: Tensor) -> Tensor:
    """(H, W) int64 class ids, each pixel's own argmax; 0 where opacity <= 0.5."""
    scores = decoder.similarity(out.semantics, vocabulary[1:], unnormalised=True)
    return torch.where(out.alpha > 0.5, scores.argmax(-1) + 1, 0)


def coherent_labels(labels: Tensor, out: RenderOutput) -> Tensor:
    """Per-pixel labels of ``out`` -> each rendered segment's majority (empty pixels are in no segment: stay 0),
    but where a large connected piece of one class disagrees with its segment (:func:`keep_large_pieces`)."""
    return keep_large_pieces(labels, segment_majority(labels, rendered_segments(out, scale_with_size=True)))


def evaluate_semantics(gmap: GaussianMap, model: SemanticModel, dataset: SequenceDataset,
                       teacher: Teacher | None = None, indices: list[int] | None = None,
                       panels_dir: str | Path | None = None) -> dict:
    """mIoU and pixel accuracy (per image, class 0 ignored) of the map, and of the teacher on the same views.

    'map': coherent labels (the class of each rendered segment, what images and queries show); 'map_pixelwise':
    each pixel's own decoded class. semantic_render_ms: render + per-pixel decoding; coherent_labels_ms: the
    segmentation and vote on top of it.
    """
    indices = dataset.test_indices if indices is None else indices
    n = len(model.vocabulary)
    rows, times = [], []
    for i in indices:
        frame = dataset[i]
        if frame.labels is None:
            raise ValueError(f"{dataset.root}: frame {i} has no ground-truth labels to score against")
        t0 = time.perf_counter()
        out = gmap.render(frame.camera)
        labels = pixel_labels(out, model.decoder, model.vocabulary_embeddings)
        t1 = time.perf_counter()
        pred, pixelwise = coherent_labels(labels, out).cpu().numpy(), labels.cpu().numpy()
        times.append(((t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3))
        row = {"index": i, "map": semantic_scores(pred, frame.labels, n),
               "map_pixelwise": semantic_scores(pixelwise, frame.labels, n)}
        if teacher is not None:
            t_pred = teacher_labels(teacher(frame))
            row["teacher"] = semantic_scores(t_pred, frame.labels, n)
        if panels_dir is not None:
            tiles, titles = [frame.labels, pred], ["ground truth", f"map (mIoU {100 * row['map'][0]:.0f})"]
            if teacher is not None:
                tiles.insert(1, t_pred)
                titles.insert(1, f"2D teacher (mIoU {100 * row['teacher'][0]:.0f})")
            write_image(Path(panels_dir) / f"semantic_{i}.png",
                        labelled_classes_panel(tiles, titles, model.vocabulary))
        rows.append(row)
    render_ms, coherent_ms = np.mean(times, axis=0)
    result = {"views": len(rows), "semantic_render_ms": float(render_ms),
              "semantic_render_fps": 1000.0 / float(render_ms), "coherent_labels_ms": float(coherent_ms)}
    for who in ("map", "map_pixelwise", "teacher"):
        vals = [r[who] for r in rows if who in r]
        if vals:
            result[f"{who}_miou"] = float(np.nanmean([v[0] for v in vals]))
            result[f"{who}_pixel_acc"] = float(np.nanmean([v[1] for v in vals]))
    if teacher is not None:
        result["teacher_corruption"] = asdict(teacher.corruption)
    result["per_view"] = [{"index": r["index"], **{f"{k}_miou": v[0] for k, v in r.items() if k != "index"}}
                          for r in rows]
    return result
