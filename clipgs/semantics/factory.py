"""Build the semantic stage (2D source, text encoder, vocabulary) from flat settings (CLI flags, ROS params).

Weights only ever come from local files. Random weights are accepted only for ``clipgs-tiny``, the
small test model, so a real model without its checkpoint is a clear error, never silent nonsense.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from clipgs.data.frame import Frame
from clipgs.mapping.config import MapperConfig
from clipgs.semantics.model import SemanticModel
from clipgs.semantics.sources import MaskEmbeddings
from clipgs.semantics.text import TextEncoder

SOURCES = ("none", "clip_fast", "clip_sam", "precomputed")
TEST_MODEL = "clipgs-tiny"
DEFAULT_VOCABULARY = ("wall, floor, ceiling, door, window, chair, table, sofa, bed, cabinet, shelf, lamp, plant, "
                      "monitor, keyboard, book, bottle, cup, person")


@dataclass
class SemanticSettings:
    """Which 2D semantic source supervises the map, and the label set 3DCS and semantic images use."""

    semantic_source: str = "clip_fast"  # none | clip_fast | clip_sam | precomputed
    clip_model: str = "ViT-B-16"  # open_clip architecture name
    clip_weights: str = ""  # local open_clip checkpoint of clip_model (required unless clip_model is clipgs-tiny)
    sam_model: str = "vit_b"  # vit_b | vit_l | vit_h
    sam_weights: str = ""  # local segment-anything checkpoint (clip_sam)
    sam_points_per_side: int = 32
    max_masks: int = 64  # largest masks kept per frame
    semantics_dir: str = ""  # precomputed: folder written by `clipgs extract`
    vocabulary: str = DEFAULT_VOCABULARY  # comma-separated class names (3DCS labels, semantic image colours)

    def class_names(self) -> list[str]:
        """Index 0 is the void class, then the vocabulary's names."""
        names = [n.strip() for n in self.vocabulary.split(",") if n.strip()]
        if not names:
            raise ValueError("vocabulary is empty: give comma-separated class names, e.g. 'chair, table'")
        return ["void", *names]


@dataclass
class SemanticStack:
    """What the mapper and queries need; ``source`` None means semantics are off."""

    source: Callable[[Frame], MaskEmbeddings] | None = None
    text: TextEncoder | None = None
    classes: list[str] = field(default_factory=list)  # index 0 = void
    vocabulary: Tensor | None = None  # (C, D) unit text embeddings, row 0 zeros
    description: str = "semantics off"

    def model(self, decoder, notes: dict | None = None) -> SemanticModel:
        """The saveable semantic model once the mapper has trained ``decoder``."""
        return SemanticModel(decoder, self.text.identity, list(self.classes), self.vocabulary, dict(notes or {}))


def with_semantic_channels(config: MapperConfig, default_dim: int = 16) -> MapperConfig:
    """``config`` with semantic attribute channels: sem_dim 0 (the geometry-only default) becomes ``default_dim``."""
    return dataclasses.replace(config, sem_dim=default_dim) if config.sem_dim == 0 else config


def build_semantics(settings: SemanticSettings, classes: list[str] | None = None,
                    device: str = "cpu") -> SemanticStack:
    """The configured stage. classes: a dataset's class names (index 0 void) instead of the vocabulary.

    Raises ValueError / FileNotFoundError with what to set when a model or its weights are missing.
    """
    from clipgs.semantics.pipeline import vocabulary_embeddings

    s = settings
    if s.semantic_source not in SOURCES:
        raise ValueError(f"unknown semantic_source {s.semantic_source!r}; one of {', '.join(SOURCES)}")
    if s.semantic_source == "none":
        return SemanticStack()
    if not s.clip_weights and s.clip_model != TEST_MODEL:
        raise ValueError(f"{s.semantic_source} needs CLIP weights for {s.clip_model}: set clip_weights to a local "
                         f"open_clip checkpoint (clipgs never downloads weights), or clip_model to {TEST_MODEL} "
                         "for a random-weight smoke test whose answers mean nothing")
    weights = s.clip_weights or None
    text = TextEncoder(s.clip_model, weights, device=device)
    names = list(classes) if classes else s.class_names()
    source = _source(s, weights, device)
    what = f"{s.semantic_source}, CLIP {s.clip_model} ({s.clip_weights or 'random weights: test model'})"
    if s.semantic_source == "clip_sam":
        what += f", SAM {s.sam_model} ({s.sam_weights})"
    return SemanticStack(source, text, names, vocabulary_embeddings(text, names), what)


def _source(s: SemanticSettings, weights: str | None, device: str) -> Callable[[Frame], MaskEmbeddings]:
    from clipgs.semantics.clip_sources import (
        ClipFastSource,
        ClipSamSource,
        MaskCLIPEmbedder,
        PrecomputedSource,
        SamSegmenter,
    )

    if s.semantic_source == "precomputed":
        if not s.semantics_dir:
            raise ValueError("semantic source 'precomputed' needs semantics_dir (CLI: --semantics-dir), "
                             "the folder clipgs extract wrote")
        return PrecomputedSource(s.semantics_dir)
    embedder = MaskCLIPEmbedder(s.clip_model, weights, device=device)
    if s.semantic_source == "clip_sam":
        segmenter = SamSegmenter(s.sam_model, s.sam_weights or None, points_per_side=s.sam_points_per_side,
                                 device=device)
        return ClipSamSource(embedder, segmenter, s.max_masks)
    return ClipFastSource(embedder, s.max_masks)
