"""ChannelTrainer: the hooks through which the mapper trains extra per-Gaussian channels beside the geometry.

In the spirit of gsplat's ``Strategy``: the mapper owns the map, the keyframes and the optimisation loop;
a channel trainer (``SemanticTrainer`` is one) owns its own model and optimiser and is called at a few points
of the loop. The mapper never needs to know what the channels mean.
This base class trains nothing: with it the map has colour and geometry only.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import Tensor

from clipgs.render import RenderOutput

if TYPE_CHECKING:
    from clipgs.data.frame import Frame
    from clipgs.mapping.gaussian_map import GaussianMap
    from clipgs.mapping.keyframes import Keyframe
    from clipgs.mapping.mapper import IncrementalMapper


class ChannelTrainer:
    """Geometry only: no extra channels, no extra losses (the default of ``IncrementalMapper``)."""

    channels: int = 0  # attribute channels per Gaussian, rendered after RGB in the same pass
    channel_lr: float = 0.0  # Adam learning rate of those per-Gaussian channels
    channels_move_geometry: bool = True  # whether losses on the channels reach the geometry (or only the channels)
    # Set by a worker feeding a live stream (``MapperWorker``): True while frames wait for the mapper. Optional
    # work (e.g. self-training rounds) may wait while it is: mapping the new views comes first. Offline: never.
    stream_behind: Callable[[], bool] = staticmethod(lambda: False)

    def attach(self, mapper: IncrementalMapper) -> None:
        """Called once by the mapper that will call the other hooks (device and seed are in it)."""

    def observe(self, frame: Frame) -> Any:
        """At a new keyframe: what the trainer keeps for it (``Keyframe.annotation``), or None. Must not raise
        for a bad observation: a keyframe without an annotation is still mapped for its geometry."""
        return None

    @property
    def needs_whole_map(self) -> bool:
        """Whether ``keyframe_loss`` puts terms on Gaussians out of the camera's view (the step then trains the
        whole map rather than the Gaussians in view)."""
        return False

    def renders_channels(self, keyframe: Keyframe) -> bool:
        """Whether the step on ``keyframe`` renders the extra channels and calls ``keyframe_loss``."""
        return False

    def channel_pixels(self, keyframe: Keyframe) -> Tensor | None:
        """(P,) flat pixel indices: the only pixels whose extra channels the coming ``keyframe_loss`` reads (it
        finds them again as ``out.attribute_pixels``; the render may skip the others), or None: all of them, or
        the step renders no channels (``renders_channels`` False)."""
        return None

    def begin_round(self, mapper: IncrementalMapper) -> None:
        """Before a round of optimisation steps (one per keyframe, and the final refinement)."""

    def keyframe_loss(self, out: RenderOutput, keyframe: Keyframe, gaussians: GaussianMap,
                      parts: dict[str, float]) -> Tensor | None:
        """The channel loss on a keyframe's render, added to the geometry loss; ``gaussians`` is the live
        (differentiable) map, for terms on the Gaussians themselves; may add entries to ``parts``."""
        return None

    def zero_grad(self) -> None:
        """Clear the gradients of the trainer's own parameters (before a step that renders the channels)."""

    def step(self) -> None:
        """Step the trainer's own optimiser (after a step that rendered the channels)."""

    def end_round(self, mapper: IncrementalMapper) -> None:
        """After a keyframe's round of steps: extra steps of the trainer's own (``mapper.train_step``)."""

    def after_keyframe(self, mapper: IncrementalMapper) -> None:
        """After a keyframe was mapped and pruned: periodic work such as relabelling."""

    def finish(self, mapper: IncrementalMapper, progress: Callable[[int, int], None] | None = None,
               stop: Callable[[], bool] | None = None, ended: bool = True) -> None:
        """Once the stream has ended (``IncrementalMapper.finish``) or gone quiet (``ended`` False: the worker's
        idle refit, called without ``mapper.lock`` held: take it for each change readers must not see half of, and
        leave the Gaussians as they are, the stream may go on): closing work that pays only when nothing more
        comes, e.g. refitting a decoder on every held keyframe; ``progress(done, total)`` may be called;
        ``stop()`` true: end early."""

    def snapshot(self) -> Any:
        """A copy of what turns the channels into meaning (e.g. a decoder), safe to use from another thread;
        None while there is none."""
        return None

    def counters(self) -> dict[str, Any]:
        """Counters for logs and summaries (copies)."""
        return {}

    def close(self) -> None:
        """Release what the trainer runs beside the mapper (threads); the mapper is done with it."""
