"""SemanticModel: what turns a map's attributes into meaning (decoder + text space + vocabulary).

Saved beside the map as ``<map>.semantics.pt`` so a saved map can be queried later with the same
decoder and the same text encoder.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from clipgs.errors import MapFileError
from clipgs.semantics.sac import SemanticDecoder

FORMAT = "clipgs-semantics-v1"


@dataclass
class SemanticModel:
    decoder: SemanticDecoder
    text_encoder: dict  # TextEncoder.identity: model, weights, templates
    vocabulary: list[str] = field(default_factory=list)  # class names, index 0 = void
    vocabulary_embeddings: Tensor | None = None  # (C, D), row 0 = zeros for void
    notes: dict = field(default_factory=dict)  # e.g. the teacher's corruption settings


def semantics_path(map_path: str | Path) -> Path:
    map_path = Path(map_path)
    return map_path.with_name(map_path.stem + ".semantics.pt")


def map_fingerprint(map_path: str | Path) -> str | None:
    """SHA-256 of the map file (None when there is none): ties a semantic model to the exact map it decodes."""
    map_path = Path(map_path)
    if not map_path.is_file():
        return None
    digest = hashlib.sha256()
    with open(map_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_semantics(model: SemanticModel, map_path: str | Path) -> Path:
    """Write ``<map>.semantics.pt`` beside ``map_path`` (written first: the model records its fingerprint)."""
    path = semantics_path(map_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dec = model.decoder
    blob = {"format": FORMAT, "sem_dim": dec.sem_dim, "embed_dim": dec.embed_dim,
            "hidden": dec.hidden, "decoder": {k: v.cpu() for k, v in dec.state_dict().items()},
            "text_encoder": model.text_encoder, "vocabulary": model.vocabulary,
            "vocabulary_embeddings": None if model.vocabulary_embeddings is None else model.vocabulary_embeddings.cpu(),
            "notes": model.notes, "map_sha256": map_fingerprint(map_path)}
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(blob, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write (disk full, Ctrl-C) leaves no .tmp behind
    return path


def load_semantics(map_path: str | Path, gmap=None) -> SemanticModel | None:
    """The map's semantic model, or None if the map has none. A corrupt file, or one written for another map
    (a stale ``.semantics.pt`` beside a re-mapped ``.ply``, one copied from elsewhere; with ``gmap``, also a
    decoder for another attribute width) raises MapFileError."""
    path = semantics_path(map_path)
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("format") != FORMAT:
            raise ValueError(f"format {blob.get('format')!r}, expected {FORMAT}")
        decoder = SemanticDecoder(blob["sem_dim"], blob["embed_dim"], blob["hidden"])
        decoder.load_state_dict(blob["decoder"])
    except Exception as exc:
        raise MapFileError(f"{path}: unreadable semantic model ({type(exc).__name__}: {exc})") from exc
    recorded = blob.get("map_sha256")
    if recorded is not None and recorded != map_fingerprint(map_path):
        raise MapFileError(f"{path} was written for another version of {Path(map_path).name} (the map was re-written "
                           "since): map again, or delete it to use the map without semantics")
    if gmap is not None and gmap.sem_dim != decoder.sem_dim:
        raise MapFileError(f"{path} decodes {decoder.sem_dim} attributes per Gaussian but {Path(map_path).name} has "
                           f"{gmap.sem_dim}: it belongs to another map")
    decoder.eval()
    return SemanticModel(decoder, blob["text_encoder"], list(blob["vocabulary"]), blob["vocabulary_embeddings"],
                         dict(blob.get("notes", {})))
