"""What the mapper reports about its own time: phases, the per-keyframe line of ``clipgs map`` and the demo."""
from __future__ import annotations

import time

from clipgs.mapping.offline import keyframe_time_breakdown
from clipgs.mapping.state import MAPPING_PHASES, MapperStats


def test_timed_phases_add_up_and_the_iteration_time_is_the_steps():
    stats = MapperStats()
    assert dict(stats.seconds) == dict.fromkeys(MAPPING_PHASES, 0.0)  # every phase there from the start
    for _ in range(2):
        with stats.timed("steps"):
            time.sleep(0.01)
    stats.iterations = 4
    assert 0.02 <= stats.seconds["steps"] < 0.5 and stats.seconds_per_iteration == stats.seconds["steps"] / 4
    try:
        with stats.timed("growth"):
            raise RuntimeError("a failing phase still counts its time")
    except RuntimeError:
        pass
    assert stats.seconds["growth"] > 0


def test_keyframe_time_breakdown_reads_ms_per_keyframe_and_the_rest():
    phases = dict.fromkeys(MAPPING_PHASES, 0.0) | {"steps": 6.0, "keyframe_work": 1.0, "prune": 0.001}
    summary = {"keyframes": 10, "mapping_seconds": 7.5, "phase_seconds": phases}
    # 0.1 ms of pruning a keyframe is left out; the rest is what no phase holds
    assert keyframe_time_breakdown(summary) == ("per keyframe: steps 600 ms, 3DCS / votes 100 ms, frames read, "
                                                "checked, tracked 50 ms")
