"""Update cost per token of the critic-free TokenRLOO against TokenPPO on the same batch.

    python3 benchmarks/group_update_cost.py [--tokens 64] [--envs 16] [--repeats 5] [--threads 1]

Both agents are built on the same grouped vector env (``--envs`` sub-environments in
groups of 4, ``--tokens`` new tokens, the embedded world) with the same seed, so their
first rollout holds the same completions; then ``model.train()`` (4 epochs,
minibatches of 128 transitions) is timed ``--repeats`` times on that rollout. Prints
the median seconds per trained token of each and the ratio RLOO / PPO. The
rollouts themselves cost the same (the same policy decodes the same tokens).
"""

from __future__ import annotations

import argparse
import copy
import time

import gymnasium as gym
import numpy as np
import torch

import llm_gym  # noqa: F401
from llm_gym.agents import TokenPPO, TokenRLOO


def trained_seconds(model, repeats: int) -> list[float]:
    """Wall seconds of ``model.train()`` on its current rollout, ``repeats`` times."""
    state = copy.deepcopy(model.policy.state_dict())
    optimizer = copy.deepcopy(model.policy.optimizer.state_dict())
    times = []
    for _ in range(repeats):
        model.policy.load_state_dict(state)
        model.policy.optimizer.load_state_dict(optimizer)
        model.rollout_buffer.generator_ready = False
        buffer = model.rollout_buffer
        saved = {
            name: getattr(buffer, name).copy()
            for name in ("actions", "values", "log_probs", "advantages", "returns")
        }
        observations = {k: v.copy() for k, v in buffer.observations.items()}
        extra = {
            n: getattr(buffer, n).copy() for n in ("weights", "ref_log_probs") if hasattr(buffer, n)
        }
        start = time.perf_counter()
        model.train()
        times.append(time.perf_counter() - start)
        for name, value in {**saved, **extra}.items():
            setattr(buffer, name, value)
        buffer.observations = observations
        buffer.generator_ready = False
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = dict(
        num_envs=args.envs, group_size=4, max_new_tokens=args.tokens, min_new_tokens=args.tokens
    )
    common = dict(n_steps=args.tokens, batch_size=128, n_epochs=4, seed=0, device="cpu")
    per_token = {}
    for name, agent in (("TokenPPO", TokenPPO), ("TokenRLOO", TokenRLOO)):
        model = agent("CausalLMPolicy", gym.make_vec("LLMCompletion-v0", **options), **common)
        model.learn(args.tokens * args.envs)  # one rollout and one update
        model.collect_rollouts(model.env, _NoCallback(model), model.rollout_buffer, args.tokens)
        times = trained_seconds(model, args.repeats)
        per_token[name] = np.median(times) / (args.tokens * args.envs * 4)
        print(
            f"{name:10s} train(): median {np.median(times):.3f} s over {args.repeats} repeats, "
            f"{per_token[name] * 1e6:.1f} us per trained token"
        )
    print(
        f"\nTokenRLOO / TokenPPO update cost per token: {per_token['TokenRLOO'] / per_token['TokenPPO']:.2f}x"
    )


class _NoCallback:
    """The least a callback must do for collect_rollouts outside learn()."""

    def __init__(self, model) -> None:
        self.model = model

    def on_rollout_start(self) -> None: ...

    def update_locals(self, locals_: dict) -> None: ...

    def on_step(self) -> bool:
        return True

    def on_rollout_end(self) -> None: ...


if __name__ == "__main__":
    main()
