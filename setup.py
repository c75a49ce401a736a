"""Install clipgs (ROS-free core) and clipgs_ros (ROS 2 glue).

One setup.py serves both ``pip install -e .`` and ``colcon build`` (ament_python).
It imports nothing beyond setuptools so colcon can read it without the runtime deps.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'clipgs_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    description='CLIP-informed Gaussian splatting for robots: online open-vocabulary 3D semantic maps.',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['clipgs', 'clipgs.*', 'clipgs_ros', 'clipgs_ros.*']),
    # The CPU rasterizer's C++ source is compiled on first use (or by `make install`), not at setup time,
    # so colcon and pip need no torch headers and no build step.
    package_data={'clipgs.render': ['csrc/*.cpp'], 'clipgs.data.synthetic': ['csrc/*.cpp'],
                  'clipgs.mapping': ['csrc/*.cpp'], 'clipgs.semantics': ['csrc/*.cpp']},
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml') + glob('config/*.rviz')),
    ],
    install_requires=[
        'numpy>=1.24',
        'torch>=2.1',
        'plyfile>=1.0',
        'pillow>=9.0',
        'pyyaml>=6.0',
        'tqdm>=4.60',
        'rosbags>=0.10',  # ROS 2 bag replay and message types without ROS (pure Python)
        'open_clip_torch>=2.24',  # text (and image) encoders; weights only from local paths
        'torchvision',  # pinned by constraints.txt; CPU fallbacks in clipgs.semantics.torch_compat
        'scipy>=1.9',  # connected objects in 3D query answers
        'scikit-image>=0.21',  # fast CPU segmentation for the clip_fast source
        'segment-anything>=1.0',  # clip_sam masks; weights only from local paths
        'viser>=1.0,<2',  # clipgs view: the web viewer (splats, live queries)
    ],
    extras_require={
        # gsplat is the CUDA backend; on CPU its pure-PyTorch reference is the test oracle.
        'cuda': ['gsplat==1.5.3'],
        # ROS 2 (Kilted) client wheels from PyPI: the node runs for real in the tests, DDS on loopback only.
        # tf2_msgs, vision_msgs, launch_ros and message builders are not among them (see README, ROS 2).
        'ros': ['ros-rclpy>=9.1', 'ros-rmw-fastrtps-cpp', 'ros-sensor-msgs', 'ros-geometry-msgs', 'ros-nav-msgs',
                'ros-std-msgs', 'ros-visualization-msgs'],
        'test': ['pytest>=7', 'hypothesis>=6', 'ruff>=0.5', 'gsplat==1.5.3', 'mypy>=1.14',
                 'playwright>=1.40',  # drives the system chromium in the viewer test; no browser download
                 'ros-rclpy>=9.1', 'ros-rmw-fastrtps-cpp', 'ros-sensor-msgs', 'ros-geometry-msgs', 'ros-nav-msgs',
                 'ros-std-msgs', 'ros-visualization-msgs'],
    },
    zip_safe=True,
    entry_points={
        'console_scripts': [
            'clipgs = clipgs.cli:main',
            'mapping_node = clipgs_ros.mapping_node:main',
        ],
    },
)
