"""Sample efficiency on a token tree: stock stable-baselines3 PPO, A2C and DQN
(MlpPolicy, one-hot observations), sparse reward vs ABC vs potential shaping.

The task: TokenTree-v0 with 4 token ids and horizon 4 (256 completions); the
reward model is a 1-layer GPT-2 fitted in seconds to "how many positions match a
hidden target". The exact solver gives the optimal value V*; every ``--eval-every``
steps the learner's greedy completion is scored, and a run's number is the first
step at which that completion is optimal (training stops there).

Schemes:
- sparse: the bare env (R at the last step).
- abc: AttentionCredit(beta=0.8). Its step rewards are the sparse stream (the
  token-rewards contract), so a stock learner would see no difference; here a
  callback writes info["token_rewards"] into the transitions the algorithm
  stored for the episode, at its last step, before they are used for the
  update (one env; on-policy rollouts hold whole episodes, as n_steps is a
  multiple of the horizon). DQN may sample an episode's earlier transitions
  before its end, with their provisional reward 0.
- shaping: PotentialShaping with the reward model's score of the prefix as the
  potential (it changes the stream itself, so no callback).

Usage: python examples/theory_sample_efficiency.py [--seeds 3] [--budget 4000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.callbacks import BaseCallback

from llm_gym.envs import TokenTreeEnv
from llm_gym.envs.token_tree_models import tiny_reward_model
from llm_gym.theory import Solution, solve
from llm_gym.wrappers import AttentionCredit, PotentialShaping

N_TOKENS, HORIZON = 4, 4
TARGET = np.array([1, 3, 0, 2])
ALGORITHMS = {
    "PPO": (PPO, {"n_steps": 64, "batch_size": 32, "n_epochs": 4, "learning_rate": 3e-3}),
    "A2C": (A2C, {"n_steps": 8, "learning_rate": 3e-3}),
    "DQN": (
        DQN,
        {
            "learning_starts": 200,
            "train_freq": 4,
            "target_update_interval": 200,
            "exploration_fraction": 0.3,
            "buffer_size": 10_000,
            "learning_rate": 1e-3,
        },
    ),
}
SCHEMES = ("sparse", "abc", "shaping")


def matches(ids: np.ndarray) -> float:
    return float((np.asarray(ids) == TARGET).sum())


def make_env(scheme: str, reward_model) -> TokenTreeEnv:
    env = TokenTreeEnv(N_TOKENS, HORIZON, reward=reward_model, observation="onehot")
    if scheme == "abc":
        return AttentionCredit(env, beta=0.8)
    if scheme == "shaping":
        return PotentialShaping(env, "reward_model", gamma=1.0)
    return env


class TokenRewardsIntoBuffer(BaseCallback):
    """At an episode's last step, replace its stored rewards with info["token_rewards"]."""

    def _on_step(self) -> bool:
        info, done = self.locals["infos"][0], self.locals["dones"][0]
        if not done or "token_rewards" not in info:
            return True
        token_rewards = info["token_rewards"]
        self.locals["rewards"][0] = token_rewards[-1]  # stored after this call
        earlier = token_rewards[:-1][::-1]
        if hasattr(self.model, "replay_buffer") and self.model.replay_buffer is not None:
            buffer = self.model.replay_buffer
            for k, reward in enumerate(earlier, start=1):
                buffer.rewards[(buffer.pos - k) % buffer.buffer_size, 0] = reward
        else:
            buffer = self.model.rollout_buffer
            if buffer.pos < len(earlier):
                raise RuntimeError(
                    f"an episode of {len(token_rewards)} steps began in the previous rollout "
                    f"(buffer position {buffer.pos}); n_steps must be a multiple of the horizon"
                )
            for k, reward in enumerate(earlier, start=1):
                buffer.rewards[buffer.pos - k, 0] = reward
        return True


class StopAtOptimum(BaseCallback):
    """Every ``every`` steps, score the greedy completion; stop once it is optimal."""

    def __init__(self, solution: Solution, every: int) -> None:
        super().__init__()
        self.solution, self.every = solution, every
        self.reached_at: int | None = None

    def greedy_return(self) -> float:
        obs = np.zeros(N_TOKENS * HORIZON, dtype=np.float32)
        prefix: list[int] = []
        for t in range(HORIZON):
            action, _ = self.model.predict(obs, deterministic=True)
            prefix.append(int(action))
            obs[t * N_TOKENS + int(action)] = 1.0
        return float(self.solution.returns[self.solution.tree.index(prefix), 0])

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every:
            return True
        if self.greedy_return() >= self.solution.value - 1e-9:
            self.reached_at = self.num_timesteps
            return False
        return True


def run(algorithm: str, scheme: str, seed: int, budget: int, every: int, reward_model, solution):
    cls, kwargs = ALGORITHMS[algorithm]
    env = make_env(scheme, reward_model)
    model = cls("MlpPolicy", env, gamma=1.0, seed=seed, device="cpu", **kwargs)
    stop = StopAtOptimum(solution, every)
    callbacks = [TokenRewardsIntoBuffer(), stop] if scheme == "abc" else [stop]
    model.learn(budget, callback=callbacks)
    return stop.reached_at


def table(seeds: int = 3, budget: int = 4000, every: int = 100, algorithms=None) -> str:
    """Run every (algorithm, scheme, seed) and return the markdown table."""
    torch.set_num_threads(1)
    reward_model = tiny_reward_model(N_TOKENS, HORIZON, seed=0, target=matches)
    solution = solve(TokenTreeEnv(N_TOKENS, HORIZON, reward=reward_model))
    lines = [
        f"Task: TokenTree n_tokens={N_TOKENS} horizon={HORIZON}, fitted GPT-2 RM, "
        f"V* = {solution.value:.3f}, optimal completion(s) {solution.optimal_sequences()}; "
        f"budget {budget} steps, greedy completion checked every {every} steps.",
        "",
        "| algorithm | scheme | steps to optimal, per seed | median | solved |",
        "|---|---|---|---|---|",
    ]
    for algorithm in algorithms or ALGORITHMS:
        for scheme in SCHEMES:
            start = time.perf_counter()
            steps = [
                run(algorithm, scheme, seed, budget, every, reward_model, solution)
                for seed in range(seeds)
            ]
            shown = ", ".join("-" if s is None else str(s) for s in steps)
            # an unsolved run counts as the budget: the median is then a lower bound
            median = statistics.median(budget if s is None else s for s in steps)
            solved = sum(s is not None for s in steps)
            lines.append(
                f"| {algorithm} | {scheme} | {shown} | {median:g} | {solved}/{seeds} |"
                f" <!-- {time.perf_counter() - start:.0f}s -->"
            )
            print(lines[-1], flush=True)
    lines.append("")
    lines.append("'-': not optimal within the budget (counted as the budget in the median).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=4000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--algorithms", nargs="*", choices=list(ALGORITHMS), default=None)
    args = parser.parse_args()
    print(table(args.seeds, args.budget, args.eval_every, args.algorithms))


if __name__ == "__main__":
    main()
