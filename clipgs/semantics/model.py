"""SemanticModel: what turns a map's attributes into meaning (decoder + text space + vocabulary).

Saved beside the map as ``<map>.semantics.pt`` so a saved map can be queried later with the same
decoder and the same text encoder.
"""
from __future__ import annotations

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


def save_semantics(model: SemanticModel, map_path: str | Path) -> Path:
    path = semantics_path(map_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dec = model.decoder
    blob = {"format": FORMAT, "sem_dim": dec.sem_dim, "embed_dim": dec.embed_dim,
            "hidden": dec.hidden, "decoder": {k: v.cpu() for k, v in dec.state_dict().items()},
            "text_encoder": model.text_encoder, "vocabulary": model.vocabulary,
            "vocabulary_embeddings": None if model.vocabulary_embeddings is None else model.vocabulary_embeddings.cpu(),
            "notes": model.notes}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def load_semantics(map_path: str | Path) -> SemanticModel | None:
    """The map's semantic model, or None if the map has none. A corrupt file raises MapFileError."""
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
    decoder.eval()
    return SemanticModel(decoder, blob["text_encoder"], list(blob["vocabulary"]), blob["vocabulary_embeddings"],
                         dict(blob.get("notes", {})))
