"""retain_freed_memory: freed blocks stay in the heap, and the user's own malloc settings win."""

import subprocess
import sys

import pytest

from llm_gym.experiments.allocator import MALLOPT_SETTINGS, retain_freed_memory

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")

# a fresh process: allocate, touch and free a 48 MiB block ten times (past glibc's
# largest dynamic mmap threshold, 32 MiB, so by default each one is mapped anew)
CHURN = """
import resource, sys
import numpy as np
from llm_gym.experiments.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
np.ones(1)
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(6 * 2**20)  # 48 MiB of float64
    del block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, faults[0], sum(faults[1:]))
"""


def churn_faults(mode: str) -> tuple[bool, int, int]:
    """Whether the settings applied, and the page faults of the first block and of the other nine."""
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2])


@linux_only
def test_retained_memory_is_not_faulted_in_again():
    applied, first, rest = churn_faults("retain")
    assert applied
    _, default_first, default_rest = churn_faults("default")
    # by default every block is faulted in afresh; retained, only the first one. How
    # many faults a block costs depends on transparent huge pages, which the machine's
    # state decides from one process to the next, so each mode is compared with its
    # own first block
    assert default_rest >= 4 * default_first, (default_first, default_rest)
    assert rest * 4 <= first, (first, rest)


@pytest.mark.parametrize(
    "variable", ["LLM_GYM_SYSTEM_MALLOC", *(name for _, _, name in MALLOPT_SETTINGS)]
)
def test_the_users_malloc_settings_win(monkeypatch, variable):
    monkeypatch.setenv(variable, "1")
    assert retain_freed_memory() is False
