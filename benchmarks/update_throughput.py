"""PPO update throughput of TokenPPO at two completion lengths.

    python3 benchmarks/update_throughput.py [--lengths 16 120] [--threads N]

One rollout of 16 episodes is collected, then ``model.train()`` (4 epochs,
minibatches of 64 transitions) is timed. Training tokens/s counts each
transition once per epoch. The update follows stock SB3: every transition is a
full forward over its observation window (prompt + max_new_tokens positions), so
one episode of T tokens costs T window forwards: O(T * (P + T)) tokens of compute
per episode instead of the O(P + T) of a single forward over the finished episode.
The embedded LM knows 128 positions, so the longer setting is 8 + 120 tokens.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import torch

import llm_gym  # noqa: F401
from llm_gym.agents import TokenPPO


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
        env = gym.make_vec(
            "LLMCompletion-v0", num_envs=args.envs, max_new_tokens=T, eos_ends_episode=False
        )
        model = TokenPPO("CausalLMPolicy", env, n_steps=T, batch_size=64, n_epochs=4, seed=0)
        model.learn(args.envs * T)  # one rollout and one update (warm-up)
        callback = model.token_callback
        model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
        start = time.perf_counter()
        model.train()
        seconds = time.perf_counter() - start
        tokens = args.envs * T * model.n_epochs
        rates[T] = tokens / seconds
        window = env.single_observation_space["input_ids"].shape[0]
        print(
            f"T={T:4d} window={window:4d}  update {seconds:6.2f} s  "
            f"{rates[T]:8.0f} training tokens/s"
        )
    if len(rates) > 1:
        short, long = min(rates), max(rates)
        print(f"tokens/s ratio T={long} vs T={short}: {rates[long] / rates[short]:.2f}x")


if __name__ == "__main__":
    main()
