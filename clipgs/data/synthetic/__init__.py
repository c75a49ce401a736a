"""Synthetic indoor scenes with exact ground truth, written in the Replica (Semantic-NeRF) layout."""
from clipgs.data.synthetic.generate import generate_scene
from clipgs.data.synthetic.scenes import SCENES, build_scene

__all__ = ["SCENES", "build_scene", "generate_scene"]
