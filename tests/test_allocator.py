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
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    block = np.ones(6 * 2**20)  # 48 MiB of float64
    del block
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def churn_faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@linux_only
def test_retained_memory_is_not_faulted_in_again():
    applied, retained = churn_faults("retain")
    assert applied
    _, default = churn_faults("default")
    # by default every block is faulted in afresh; retained, only the first one
    # (page counts depend on transparent huge pages, so compare the two)
    assert retained * 4 < default


@pytest.mark.parametrize(
    "variable", ["LLM_GYM_SYSTEM_MALLOC", *(name for _, _, name in MALLOPT_SETTINGS)]
)
def test_the_users_malloc_settings_win(monkeypatch, variable):
    monkeypatch.setenv(variable, "1")
    assert retain_freed_memory() is False
