"""Env steps per second: single env and native vector env, with and without reward-model scoring.

Random actions on the embedded default world. "no RM" swaps in a constant reward
function, so the difference is the cost of the reward model; the RM share is
(time with RM - time without) / time with RM, all medians of several repeats.

    python benchmarks/env_throughput.py [--steps 4000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

import llm_gym  # noqa: F401


def time_single(steps: int, reward_model) -> float:
    env = gym.make("LLMCompletion-v0", reward_model=reward_model, device="cpu")
    actions = np.random.default_rng(0).integers(env.action_space.n, size=steps)
    env.reset(seed=0)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, _, _ = env.step(int(action))
        if terminated:
            env.reset()
    return steps / (time.perf_counter() - start)


def time_vector(num_envs: int, steps: int, reward_model) -> float:
    envs = gym.make_vec(
        "LLMCompletion-v0", num_envs=num_envs, reward_model=reward_model, device="cpu"
    )
    rounds = max(1, steps // num_envs)
    actions = np.random.default_rng(0).integers(envs.single_action_space.n, size=(rounds, num_envs))
    envs.reset(seed=0)
    start = time.perf_counter()
    for row in actions:
        envs.step(row)
    return rounds * num_envs / (time.perf_counter() - start)


def median_rate(fn, repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    constant = lambda text: 0.0  # noqa: E731

    print(f"{'setting':<16}{'steps/s no RM':>16}{'steps/s with RM':>18}{'RM share':>10}")
    cases = [("single", lambda rm: time_single(args.steps, rm))]
    cases += [
        (f"vector N={n}", lambda rm, n=n: time_vector(n, args.steps, rm)) for n in (1, 16, 64)
    ]
    for name, run in cases:
        bare = median_rate(lambda run=run: run(constant), args.repeats)
        scored = median_rate(lambda run=run: run(None), args.repeats)
        share = 1.0 - scored / bare
        print(f"{name:<16}{bare:>16,.0f}{scored:>18,.0f}{share:>10.0%}")


if __name__ == "__main__":
    main()
