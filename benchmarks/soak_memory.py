"""Memory soak: does TokenPPO's resident memory stay flat over a long run?

    python3 benchmarks/soak_memory.py [--updates 300] [--every 10] [--threads 1]

Trains TokenPPO with ABC (the paper preset: 8-16-token completions, 16 episodes
per update) for ``--updates`` updates and samples the process's resident set size
(RSS) every ``--every`` updates. Prints each sample, then the least-squares slope
of RSS against updates in MiB per 100 updates, measured after a warm-up (the
first 10% of the run, when allocator pools and caches fill), against the goal of
under 5 MiB per 100 updates.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

import llm_gym  # noqa: F401
from llm_gym.agents import TokenPPO
from llm_gym.wrappers import AttentionCredit


def rss_mib() -> float:
    """This process's resident set size in MiB (Linux /proc, else the peak from resource)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RSSSampler(BaseCallback):
    """RSS after every ``every``-th update (rollout)."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = every
        self.samples: list[tuple[int, float]] = []
        self.updates = 0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.updates % self.every == 0:
            gc.collect()
            self.samples.append((self.updates, rss_mib()))
            print(f"update {self.updates:4d}: RSS {self.samples[-1][1]:8.1f} MiB", flush=True)
        self.updates += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = AttentionCredit(gym.make("LLMCompletion-v0", task="paper"), beta=0.8)
    model = TokenPPO("CausalLMPolicy", env, n_envs=16, n_steps=16, batch_size=128, seed=0)
    sampler = RSSSampler(args.every)
    started = time.perf_counter()
    model.learn(args.updates * 16 * 16, callback=sampler)
    minutes = (time.perf_counter() - started) / 60
    updates, rss = (np.array(v, dtype=np.float64) for v in zip(*sampler.samples))
    after = updates >= 0.1 * args.updates
    slope = np.polyfit(updates[after], rss[after], 1)[0] * 100
    print(
        f"\n{args.updates} updates in {minutes:.1f} min; RSS {rss[0]:.1f} -> {rss[-1]:.1f} MiB; "
        f"slope after warm-up {slope:+.2f} MiB per 100 updates (goal: under 5)"
    )


if __name__ == "__main__":
    main()
