"""The Gaussian map and the mapper that grows it: growth from RGB-D, optimisation, pruning, PLY files.

Nothing here knows what semantic channels mean: a :class:`ChannelTrainer` (the semantic trainer) trains them.
"""
from clipgs.errors import MapFileError
from clipgs.mapping.channel_trainer import ChannelTrainer
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.gaussian_map import GaussianMap
from clipgs.mapping.mapper import IncrementalMapper
from clipgs.mapping.ply import load_ply, save_ply
from clipgs.mapping.state import MapperStats, MapSnapshot
from clipgs.mapping.trainable_map import TrainableMap

__all__ = ["ChannelTrainer", "GaussianMap", "IncrementalMapper", "MapFileError", "MapSnapshot", "MapperConfig",
           "MapperStats", "TrainableMap", "load_ply", "save_ply"]
