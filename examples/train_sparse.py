"""Train TokenPPO on the embedded default world with the sparse reward.

    python3 examples/train_sparse.py [--updates 60] [--new-tokens 32] [--lr 3e-5]

Prints, per update: mean RM score of the rollout's completions, KL to the
reference per completion (nats), the adaptive KL coefficient, the distinct-token
ratio (1.0: no repeated tokens; near 0: collapse into one token) and the
completion length. At the end it compares the untrained and trained policy on
the same 128 held-out prompt draws.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import torch
from stable_baselines3.common.callbacks import BaseCallback

import llm_gym  # noqa: F401
from llm_gym.agents import TokenPPO, evaluate_completions


class PrintPerUpdate(BaseCallback):
    """Print the rollout statistics TokenPPO logs, one line per update."""

    def _on_training_start(self) -> None:
        self.start = time.perf_counter()
        self.update = 0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        values = self.logger.name_to_value
        self.update += 1
        print(
            f"update {self.update:4d}  {time.perf_counter() - self.start:6.0f} s  "
            f"score {values['rollout/score_mean']:+.2f}  "
            f"KL {values.get('rollout/kl_per_completion', 0.0):6.2f}  "
            f"coef {values.get('rollout/kl_coef', 0.0):.3f}  "
            f"distinct {values['rollout/distinct_token_ratio']:.2f}  "
            f"length {values['rollout/completion_length']:.1f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=60)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--kl-target", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--save", default=None, help="save the trained model here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    T = args.new_tokens
    env = gym.make_vec("LLMCompletion-v0", num_envs=args.envs, max_new_tokens=T)
    model = TokenPPO(
        "CausalLMPolicy",
        env,
        n_steps=T,
        learning_rate=args.lr,
        kl_target=args.kl_target,
        seed=args.seed,
    )
    before = evaluate_completions(model, n_episodes=128, seed=10_000, max_new_tokens=T)
    model.learn(args.envs * T * args.updates, callback=PrintPerUpdate())
    after = evaluate_completions(model, n_episodes=128, seed=10_000, max_new_tokens=T)
    for name, summary in (("untrained", before), ("trained", after)):
        print(
            f"{name:9s} score {summary['score']:+.2f}  distinct {summary['distinct']:.2f}  "
            f"length {summary['length']:.1f}"
        )
    if args.save:
        model.save(args.save)


if __name__ == "__main__":
    main()
