"""Can TokenPPO's critic see what the return depends on? An offline probe of the value head.

Collects rollouts of the untrained policy (the reference LM) on a task, then fits
a fresh critic of TokenPPO's default design (a 128-wide tanh MLP on the LM's
detached last hidden state, last layer zeroed) to each state's Monte Carlo return
(the sum of the episode's rewards from that step on: with sparse rewards, the
completion's score), with Adam at several learning rates, for as many steps as a
150-update run of the default preset takes (150 x 4 epochs x 8 minibatches of
128). It prints the held-out explained variance, against two references measured
on the same states:

- ``prefix rule score``: on a rule task (decisive, diffuse, interaction), the
  rule's score of the text so far, a predictor that reads the prefix and nothing
  else; its explained variance is how much of the return the prefix determines;
- ``reward model's prefix score``: the task's reward model read on the text so far
  (the potential of ``pbrs``, and where a critic initialised from the reward model,
  as TRL and InstructGPT build theirs, would start): as it stands, and after the
  least-squares affine map fitted on the training states;
- ``PPO's targets``: the spread of the targets PPO itself trains the critic on
  (TD(lambda) returns with this critic's zero values: lambda^(steps left) x score).

::

    python benchmarks/critic_probe.py --task decisive [--rollouts 40] [--held-out 8]
        [--lrs 3e-5 3e-4 3e-3] [--steps 4800] [--threads 1]

Wall time on one core: about 2 minutes for 40 rollouts of the decisive task.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import explained_variance

from llm_gym import assets
from llm_gym.assets.rules import RULES, rule_words
from llm_gym.experiments.presets import ComparePreset
from llm_gym.experiments.runs import make_agent
from llm_gym.rewards import CompletionBatch, HFRewardModel
from llm_gym.rewards.loading import load_tokenizer


def returns_to_go(rewards: np.ndarray, episode_starts: np.ndarray) -> np.ndarray:
    """Per step, the sum of its episode's rewards from that step on (``(n_steps, n_envs)``)."""
    out = np.zeros_like(rewards)
    after = np.zeros(rewards.shape[1])
    for t in reversed(range(len(rewards))):
        continues = 1.0 - episode_starts[t + 1] if t + 1 < len(rewards) else 0.0
        after = rewards[t] + after * continues
        out[t] = after
    return out


class RolloutGrabber(BaseCallback):
    """Keeps each rollout's hidden states, returns to go, PPO targets and rule prefix scores."""

    def __init__(self, task: str, reward_model: HFRewardModel, tokenizer: Any) -> None:
        super().__init__()
        self.task = task
        self.reward_model, self.tokenizer = reward_model, tokenizer
        self.rm_prefix: list[np.ndarray] = []
        self.hidden: list[np.ndarray] = []
        self.returns: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.prefix: list[np.ndarray] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer: Any = self.model.rollout_buffer
        obs = {
            k: torch.as_tensor(v.reshape(-1, *v.shape[2:])) for k, v in buffer.observations.items()
        }
        policy: Any = self.model.policy
        policy.set_training_mode(True)  # full forwards over arbitrary windows, not the cache
        with torch.no_grad():
            rows = len(obs["input_ids"])
            hidden = [
                policy.hidden_state({k: v[i : i + 256] for k, v in obs.items()})
                for i in range(0, rows, 256)
            ]
        self.hidden.append(torch.cat(hidden).numpy())
        self.returns.append(returns_to_go(buffer.rewards, buffer.episode_starts).reshape(-1))
        self.targets.append(buffer.returns.reshape(-1).copy())
        ids, mask = obs["input_ids"].numpy(), obs["attention_mask"].numpy()
        windows = [i[m > 0].astype(np.int64) for i, m in zip(ids, mask)]
        scores = []
        for i in range(0, len(windows), 256):  # the whole window as one text
            part = windows[i : i + 256]
            batch = CompletionBatch([w[:-1] for w in part], [w[-1:] for w in part], self.tokenizer)
            scores.append(self.reward_model(batch).scores)
        self.rm_prefix.append(np.concatenate(scores))
        if self.task in RULES:
            rule = RULES[self.task]
            self.prefix.append(
                np.array([rule.score(" ".join(rule_words(i[m > 0]))) for i, m in zip(ids, mask)])
            )


def fit_critic(
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    lr: float,
    steps: int,
    seed: int,
) -> dict[int, float]:
    """Explained variance of a fresh default critic: held out after 1/15, 1/3 and all ``steps``,
    and (key ``0``) on its own training states at the end.

    ``data``: training inputs and returns, held-out inputs and returns.
    """
    x, y, x_test, y_test = data
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 128), torch.nn.Tanh(), torch.nn.Linear(128, 1)
    )
    torch.nn.init.zeros_(net[2].weight)
    torch.nn.init.zeros_(net[2].bias)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    draws = torch.Generator().manual_seed(seed)
    checkpoints, scores = {max(steps // 15, 1), max(steps // 3, 1), steps}, {}
    for step in range(1, steps + 1):
        batch = torch.randint(len(x), (128,), generator=draws)
        loss = ((net(x[batch]).squeeze(-1) - y[batch]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in checkpoints:
            with torch.no_grad():
                scores[step] = net(x_test).squeeze(-1)
    with torch.no_grad():
        fitted = net(x).squeeze(-1)
    return {
        0: float(explained_variance(fitted.numpy(), y.numpy())),
        **{s: float(explained_variance(p.numpy(), y_test.numpy())) for s, p in scores.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="decisive")
    parser.add_argument("--rollouts", type=int, default=40)
    parser.add_argument("--held-out", type=int, default=8, help="rollouts kept for evaluation")
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-5, 3e-4, 3e-3])
    parser.add_argument("--steps", type=int, default=4800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not 0 < args.held_out < args.rollouts:
        parser.error(f"--held-out must be in [1, {args.rollouts - 1}], got {args.held_out}")
    torch.set_num_threads(args.threads)
    # a learning rate no update can move the policy by: rollouts of the reference LM
    preset = replace(ComparePreset(), task=args.task, learning_rate=1e-12)
    model = make_agent("sparse", args.seed, preset)
    rm = HFRewardModel(assets.reward_model_path(preset.reward_model_name), device="cpu")
    grab = RolloutGrabber(args.task, rm, load_tokenizer(str(assets.TOKENIZER_DIR)))
    start = time.perf_counter()
    model.learn(total_timesteps=args.rollouts * model.n_steps * model.n_envs, callback=grab)
    split = args.rollouts - args.held_out
    returns = np.concatenate(grab.returns)
    print(
        f"task {args.task}: {len(returns)} states of {args.rollouts} rollouts "
        f"({time.perf_counter() - start:.0f} s); return to go: mean {returns.mean():+.3f}, "
        f"sd {returns.std():.3f}; PPO's targets: sd {np.concatenate(grab.targets).std():.3f}"
    )
    if grab.prefix:
        prefix = float(explained_variance(np.concatenate(grab.prefix), returns))
        print(f"prefix rule score: explained variance {prefix:.3f}")
    rm_train, rm_test = (
        np.concatenate(grab.rm_prefix[:split]),
        np.concatenate(grab.rm_prefix[split:]),
    )
    y_train, y_test = np.concatenate(grab.returns[:split]), np.concatenate(grab.returns[split:])
    slope, intercept = np.polyfit(rm_train, y_train, 1)
    print(
        "reward model's prefix score: held-out explained variance "
        f"{explained_variance(rm_test, y_test):.3f} as it stands, "
        f"{explained_variance(slope * rm_test + intercept, y_test):.3f} after the affine fit "
        f"({slope:.2f} x + {intercept:+.2f}) on the training states"
    )
    as_tensor = lambda parts: torch.as_tensor(np.concatenate(parts), dtype=torch.float32)  # noqa: E731
    data = (
        as_tensor(grab.hidden[:split]),
        as_tensor(grab.returns[:split]),
        as_tensor(grab.hidden[split:]),
        as_tensor(grab.returns[split:]),
    )
    for lr in args.lrs:
        scores = fit_critic(data, lr, args.steps, args.seed)
        shown = ", ".join(f"{s} steps {v:.3f}" for s, v in sorted(scores.items()) if s)
        print(
            f"critic MLP, Adam lr {lr:g}: held-out explained variance after {shown}; "
            f"on its training states {scores[0]:.3f}"
        )


if __name__ == "__main__":
    main()
