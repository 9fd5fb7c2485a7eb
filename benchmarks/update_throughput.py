"""PPO update throughput of TokenPPO at two completion lengths.

    python3 benchmarks/update_throughput.py [--lengths 16 120] [--threads N]

One rollout of 16 episodes is collected, then ``model.train()`` (4 epochs,
minibatches of 64 transitions) is timed. Training tokens/s counts each
transition once per epoch. Two arms, same run: TokenPPO's default
EpisodeRolloutBuffer (minibatches of whole episodes; the policy reads every step
of an episode from one window forward: O(P + T) per episode) and SB3's
DictRolloutBuffer (shuffled transitions: nearly one window forward per
transition, O(T * (P + T)) per episode). The embedded LM knows 128 positions, so
the longer setting is 8 + 120 tokens.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import torch
from stable_baselines3.common.buffers import DictRolloutBuffer

import llm_gym  # noqa: F401
from llm_gym.agents import EpisodeRolloutBuffer, TokenPPO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 120])
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}, {args.envs} episodes per rollout, 4 epochs")
    rates = {}
    for T in args.lengths:
        for buffer in (EpisodeRolloutBuffer, DictRolloutBuffer):
            env = gym.make_vec(
                "LLMCompletion-v0", num_envs=args.envs, max_new_tokens=T, eos_ends_episode=False
            )
            model = TokenPPO(
                "CausalLMPolicy", env, n_steps=T, batch_size=64, seed=0, rollout_buffer_class=buffer
            )
            model.learn(args.envs * T)  # one rollout and one update (warm-up)
            model.collect_rollouts(
                model.env, model.token_callback, model.rollout_buffer, model.n_steps
            )
            start = time.perf_counter()
            model.train()
            seconds = time.perf_counter() - start
            rates[T, buffer.__name__] = args.envs * T * model.n_epochs / seconds
            window = env.single_observation_space["input_ids"].shape[0]
            print(
                f"T={T:4d} window={window:4d} {buffer.__name__:21s} update {seconds:7.2f} s "
                f"{rates[T, buffer.__name__]:8.0f} training tokens/s"
            )
        ratio = rates[T, "EpisodeRolloutBuffer"] / rates[T, "DictRolloutBuffer"]
        print(f"T={T:4d} episode minibatches vs shuffled transitions: {ratio:.1f}x")


if __name__ == "__main__":
    main()
