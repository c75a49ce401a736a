"""Handing a thread's OpenMP team back (clipgs.openmp): the workers go, the next parallel region brings them back."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc")

# In a fresh interpreter, so no other test's threads come or go while the count is read.
SCRIPT = """
import json, os, time
import torch
from clipgs.openmp import release_thread_team

def threads():
    return len(os.listdir("/proc/self/task"))

def settled(expected):
    end = time.monotonic() + 5.0
    while threads() != expected and time.monotonic() < end:
        time.sleep(0.01)
    return threads()

def parallel_work():
    torch.ones(4_000_000).mul_(2.0).sum()  # far above PyTorch's grain size: a parallel region

torch.set_num_threads(3)
parallel_work()
with_team = threads()
released = release_thread_team()
after_release = settled(with_team - 2)
parallel_work()
after_work = settled(with_team)
print(json.dumps({"with_team": with_team, "released": released, "after_release": after_release,
                  "after_work": after_work, "again": [release_thread_team(), release_thread_team()]}))
"""


def test_release_hands_back_the_team_and_the_next_region_rebuilds_it():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if not got["released"]:
        pytest.skip("no OpenMP runtime with omp_pause_resource_all in this process")
    assert got["after_release"] == got["with_team"] - 2  # the two workers of a three-thread team exited
    assert got["after_work"] == got["with_team"]  # the next parallel region started a new team
    assert got["again"] == [True, True]  # nothing left to hand back is not an error
