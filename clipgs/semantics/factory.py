"""Build the semantic stage (2D source, text encoder, vocabulary) from flat settings (CLI flags, ROS params).

Weights only ever come from local files. Random weights are accepted only for ``clipgs-tiny``, the
small test model, so a real model without its checkpoint is a clear error, never silent nonsense.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from clipgs.data.frame import Frame
from clipgs.errors import SettingsError
from clipgs.semantics.clip_sources import SAM_MODELS
from clipgs.semantics.config import SemanticTrainingConfig
from clipgs.semantics.model import SemanticModel
from clipgs.semantics.sources import MaskEmbeddings
from clipgs.semantics.text import TextEncoder
from clipgs.semantics.trainer import SemanticTrainer
from clipgs.settings import Settings, at_least, one_of, setting

TEST_MODEL = "clipgs-tiny"
DEFAULT_VOCABULARY = ("wall, floor, ceiling, door, window, chair, table, sofa, bed, cabinet, shelf, lamp, plant, "
                      "monitor, keyboard, book, bottle, cup, person")
SOURCE_HELP = {  # the registry of 2D sources: name -> what it is (build_semantics builds each)
    "none": "no semantics (geometry only)",
    "clip_fast": "graph-based CPU segments + CLIP per segment",
    "clip_dense": "graph-based CPU segments pooled from one dense CLIP pass per frame (MaskCLIP)",
    "clip_sam": "segment-anything masks + CLIP per mask",
    "precomputed": "masks + embeddings written earlier by clipgs extract",
}
SOURCES = tuple(SOURCE_HELP)


@dataclass
class SemanticSettings(Settings):
    """Which 2D semantic source supervises the map, and the label set 3DCS and semantic images use."""

    semantic_source: str = setting("clip_fast", "2D semantics: " + "; ".join(f"{k} ({v})" for k, v in
                                                                           SOURCE_HELP.items()), one_of(SOURCES))
    clip_model: str = setting("ViT-B-16", f"open_clip architecture (e.g. ViT-B-16); {TEST_MODEL}: random-weight "
                                          "smoke test")
    clip_weights: str = setting("", "local open_clip checkpoint of clip_model (never downloaded); required for "
                                    "real models")
    sam_model: str = setting("vit_b", "clip_sam: segment-anything size (" + ", ".join(SAM_MODELS) + ")",
                             one_of(SAM_MODELS))
    sam_weights: str = setting("", "clip_sam: local segment-anything checkpoint")
    sam_points_per_side: int = setting(32, "clip_sam: point-prompt grid per image side", at_least(1))
    max_masks: int = setting(64, "largest 2D masks kept per keyframe", at_least(1))
    semantics_dir: str = setting("", "precomputed: folder written by clipgs extract (offline use)")
    vocabulary: str = setting(DEFAULT_VOCABULARY, "comma-separated class names for 3DCS labels and "
                                                  "~/semantic_image colours")

    def validate(self) -> None:
        self.class_names()

    def class_names(self) -> list[str]:
        """Index 0 is the void class, then the vocabulary's names."""
        names = [n.strip() for n in self.vocabulary.split(",") if n.strip()]
        if not names:
            raise SettingsError("setting vocabulary is empty: give comma-separated class names, e.g. 'chair, table'")
        return ["void", *names]


@dataclass
class SemanticStack:
    """What the mapper and queries need; ``source`` None means semantics are off."""

    source: Callable[[Frame], MaskEmbeddings] | None = None
    text: TextEncoder | None = None
    classes: list[str] = field(default_factory=list)  # index 0 = void
    vocabulary: Tensor | None = None  # (C, D) unit text embeddings, row 0 zeros
    description: str = "semantics off"

    def trainer(self, config: SemanticTrainingConfig) -> SemanticTrainer | None:
        """The mapper's semantic trainer for this stack (None when semantics are off)."""
        return None if self.source is None else SemanticTrainer(config, self.source, self.vocabulary)

    def model(self, decoder, notes: dict | None = None) -> SemanticModel:
        """The saveable semantic model once the mapper has trained ``decoder``."""
        return SemanticModel(decoder, self.text.identity, list(self.classes), self.vocabulary, dict(notes or {}))


def build_semantics(settings: SemanticSettings, classes: list[str] | None = None,
                    device: str = "cpu") -> SemanticStack:
    """The configured stage. classes: a dataset's class names (index 0 void) instead of the vocabulary.

    Raises ValueError / FileNotFoundError with what to set when a model or its weights are missing.
    """
    from clipgs.semantics.pipeline import vocabulary_embeddings

    s = settings
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
        ClipDenseSource,
        ClipFastSource,
        ClipSamSource,
        DenseCLIPEmbedder,
        MaskCLIPEmbedder,
        PrecomputedSource,
        SamSegmenter,
    )

    if s.semantic_source == "precomputed":
        if not s.semantics_dir:
            raise ValueError("semantic source 'precomputed' needs semantics_dir (CLI: --semantics-dir), "
                             "the folder clipgs extract wrote")
        return PrecomputedSource(s.semantics_dir)
    if s.semantic_source == "clip_dense":
        return ClipDenseSource(DenseCLIPEmbedder(s.clip_model, weights, device=device), s.max_masks)
    embedder = MaskCLIPEmbedder(s.clip_model, weights, device=device)
    if s.semantic_source == "clip_sam":
        segmenter = SamSegmenter(s.sam_model, s.sam_weights or None, points_per_side=s.sam_points_per_side,
                                 device=device)
        return ClipSamSource(embedder, segmenter, s.max_masks)
    return ClipFastSource(embedder, s.max_masks)
