"""The Gaussian map: parameters, growth from RGB-D, pruning, PLY files."""
from clipgs.mapping.gaussian_map import GaussianMap
from clipgs.mapping.ply import MapFileError, load_ply, save_ply

__all__ = ["GaussianMap", "MapFileError", "load_ply", "save_ply"]
