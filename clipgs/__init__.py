"""clipgs: CLIP-informed Gaussian splatting for robots (ROS-free core).

Pipeline modules: ``data`` (frames, datasets, synthetic scenes) -> ``mapping`` (Gaussian map)
-> ``render`` (rasterizer backends) -> ``eval`` (metrics).
"""

__version__ = "0.1.0"
