"""Critic-free group algorithms with token-level credit: TokenRLOO and TokenGRPO.

Holds the agents :class:`TokenRLOO` and :class:`TokenGRPO`; their advantages and
rollout buffer are :mod:`llm_gym.agents.group_advantages`. They need a vector environment whose
sub-environments come in groups sharing prompts
(``gym.make_vec("LLMCompletion-v0", num_envs=16, group_size=4)``). Every rollout
starts every sub-environment on a fresh episode and lasts at least the longest
completion, so each sub-environment writes one completion of its group's prompt;
a sub-environment that finishes early keeps stepping (as batched generation pads
finished sequences), and those steps weigh nothing in the update.

The advantage of token t of completion i, with k completions of one prompt:

- ``estimator="returns_to_go"``: ``A[i, t] = G[i, t] - b[i, t]``, where ``G[i, t]`` is
  the sum of completion i's token rewards from t on (``info["token_rewards"]``, and
  the KL penalty when ``kl_mode="reward"``) and ``b[i, t]`` the baseline of the other
  completions at the same position (one shorter than t counts with its last token's
  value, so with sparse rewards every other completion counts with its return):
  RLOO's leave-one-out mean ``mean_{j != i} G[j, t]``, GRPO's group mean. With sparse
  rewards ``G[i, t] = R_i`` on every token: exactly RLOO's ``R_i - mean_{j != i} R_j``
  and GRPO's group-normalised score. Its expectation is the returns-to-go policy
  gradient of the token rewards (the baseline does not depend on completion i), which
  is the gradient of the expected return when every token's reward is known from the
  tokens up to it (sparse, prefix-score shaping); for redistributions whose earlier
  credit depends on later tokens (ABC, uniform) it is not (``llm_gym.theory`` computes
  how far on small token trees).
- ``estimator="group_centred"``: the group deviation of the score,
  ``d_i = R_i - baseline``, spread by the wrapper's credit map m
  (``info["credit_map"]``): ``A[i, t] = d_i * sum_{u >= t} m[i, u]`` (plus the KL
  term's returns-to-go against its own baseline). With the sparse map it is RLOO /
  GRPO again. It needs a redistribution wrapper (no credit map: the sparse map).

GRPO divides the advantages by the group's standard deviation of the returns
(``scale_rewards="group"``, as TRL names it) or not (``"none"``). The loss is PPO's
clipped surrogate without a value term; each completion's tokens weigh
``1 / len(completion)`` (``length_normalisation=True``, GRPO) or
``1 / max_new_tokens`` (``False``, Dr. GRPO), and completions weigh equally. The KL
to the reference is a per-token reward penalty (``kl_mode="reward"``, as TokenPPO)
or a loss term with the k3 estimator ``exp(r) - r - 1``, ``r = log pi_ref - log pi``
(``kl_mode="loss"``, as GRPO).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv

from llm_gym.agents.credit import FinishedEpisode
from llm_gym.agents.group_advantages import (
    ESTIMATORS,
    SCALES,
    GroupRolloutBuffer,
    group_advantages,
)
from llm_gym.agents.policy import CausalLMPolicy
from llm_gym.agents.ppo import TokenPPO

__all__ = ["GroupRolloutBuffer", "TokenGRPO", "TokenRLOO", "group_advantages"]

KL_MODES = ("reward", "loss")


class _TokenGroupAlgorithm(TokenPPO):
    """What TokenRLOO and TokenGRPO share: group advantages, no critic, the group loss."""

    baseline = "leave_one_out"
    rollout_buffer: GroupRolloutBuffer  # the buffer class __init__ passes to TokenPPO

    def __init__(
        self,
        policy: str | type[CausalLMPolicy],
        env: gym.vector.VectorEnv | VecEnv,
        learning_rate: float | Callable[[float], float] = 3e-5,
        n_steps: int | None = None,
        batch_size: int = 64,
        n_epochs: int = 4,
        clip_range: float = 0.2,
        max_grad_norm: float = 1.0,
        estimator: str = "returns_to_go",
        scale_rewards: str = "none",
        length_normalisation: bool = True,
        kl_coef: float = 0.05,
        kl_target: float | None = 6.0,
        kl_horizon: int = 10_000,
        kl_coef_max: float = 1.0,
        kl_controller: str = "adaptive",
        kl_estimator: str = "sampled",
        kl_pid_gains: Sequence[float] | None = None,
        kl_mode: str = "reward",
        reference_model: str | None = None,
        reward_scale: float = 1.0,
        policy_kwargs: dict[str, Any] | None = None,
        _init_setup_model: bool = True,
        **kwargs: Any,
    ) -> None:
        name = type(self).__name__
        for option, value, choices in (
            ("estimator", estimator, ESTIMATORS),
            ("scale_rewards", scale_rewards, SCALES),
            ("kl_mode", kl_mode, KL_MODES),
        ):
            if value not in choices:
                raise ValueError(f"{name}: {option} must be one of {choices}, got {value!r}")
        if not isinstance(length_normalisation, bool):
            raise ValueError(
                f"{name}: length_normalisation must be True or False, got {length_normalisation!r}"
            )
        self.estimator, self.scale_rewards = estimator, scale_rewards
        self.length_normalisation, self.kl_mode = length_normalisation, kl_mode
        longest = _longest_completion(env)
        if env is None and n_steps is None:
            n_steps = 1  # loading: the saved settings replace it
        elif n_steps is None:
            if longest is None:
                raise ValueError(f"{name}: pass n_steps (at least the longest completion)")
            n_steps = longest
        elif longest is not None and n_steps < longest:
            raise ValueError(
                f"{name}: n_steps={n_steps} is shorter than the longest completion ({longest} "
                "tokens); every completion must finish within one rollout"
            )
        self.max_tokens = longest or n_steps
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=1.0,
            gae_lambda=1.0,
            clip_range=clip_range,
            ent_coef=0.0,
            vf_coef=0.0,
            max_grad_norm=max_grad_norm,
            kl_coef=kl_coef,
            kl_target=kl_target,
            kl_horizon=kl_horizon,
            kl_coef_max=kl_coef_max,
            kl_controller=kl_controller,
            kl_estimator=kl_estimator,
            kl_pid_gains=kl_pid_gains,
            reference_model=reference_model,
            reward_scale=reward_scale,
            rollout_buffer_class=GroupRolloutBuffer,
            policy_kwargs=policy_kwargs,
            _init_setup_model=_init_setup_model,
            **kwargs,
        )

    def _setup_model(self) -> None:
        super()._setup_model()
        buffer = self.rollout_buffer
        buffer.estimator, buffer.baseline = self.estimator, self.baseline
        buffer.scale_rewards, buffer.length_normalisation = (
            self.scale_rewards,
            self.length_normalisation,
        )
        buffer.max_tokens = self.max_tokens
        if self.n_envs < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 environments (one group of 2)"
            )

    # ------------------------------------------------------------------ rollouts
    def _begin_rollout(self, env: VecEnv, rollout_buffer: Any) -> None:
        # every rollout: one fresh completion per sub-environment, its group's next prompt
        if self.num_timesteps > 0:
            self._last_obs = env.reset()
            self._last_episode_starts = np.ones(env.num_envs, dtype=bool)
        rollout_buffer.credit.forget()

    def _reports(self, episode: FinishedEpisode) -> bool:
        return episode.rows[0] == 0  # the rollout's completions, not the padding after them

    def _charge_kl(self, rollout_buffer: Any, kl: np.ndarray) -> None:
        rollout_buffer.ref_log_probs = (rollout_buffer.log_probs - kl).astype(np.float32)
        rollout_buffer.kl_terms = -self.kl.coef * kl if self.kl_mode == "reward" else None

    # ------------------------------------------------------------------ update
    def train(self) -> None:
        """Epochs of PPO's clipped surrogate on the group advantages, weighted per token."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        # _setup_model makes clip_range a schedule (SB3's PPO.train reads it the same way)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        total = self.rollout_buffer.buffer_size * self.rollout_buffer.n_envs
        n_minibatches = math.ceil(total / self.batch_size)
        kl_loss_coef = (
            self.kl.coef if self.kl_mode == "loss" and self.reference is not None else 0.0
        )
        logs: dict[str, list[float]] = {
            "policy_loss": [],
            "kl_loss": [],
            "clip_fraction": [],
            "approx_kl": [],
        }
        for _ in range(self.n_epochs):
            for data in self.rollout_buffer.get(self.batch_size):
                actions = data.actions.long().flatten()
                _, log_prob, _ = self.policy.evaluate_actions(data.observations, actions)
                ratio = torch.exp(log_prob - data.old_log_prob)
                surrogate = torch.min(
                    ratio * data.advantages,
                    torch.clamp(ratio, 1 - clip_range, 1 + clip_range) * data.advantages,
                )
                policy_loss = -(data.weights * surrogate).sum() * n_minibatches
                loss = policy_loss
                if kl_loss_coef:
                    log_ratio = data.ref_log_prob - log_prob
                    k3 = torch.exp(log_ratio) - log_ratio - 1
                    kl_loss = (data.weights * k3).sum() * n_minibatches
                    loss = loss + kl_loss_coef * kl_loss
                    logs["kl_loss"].append(kl_loss.item())
                self.policy.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
                with torch.no_grad():
                    used = data.weights > 0
                    log_ratio = (log_prob - data.old_log_prob)[used]
                    logs["policy_loss"].append(policy_loss.item())
                    logs["clip_fraction"].append(
                        float(((ratio[used] - 1).abs() > clip_range).float().mean())
                    )
                    logs["approx_kl"].append(float(((torch.exp(log_ratio) - 1) - log_ratio).mean()))
        self._n_updates += self.n_epochs
        for key, values in logs.items():
            if values:
                self.logger.record(f"train/{key}", float(np.mean(values)))
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)


def _longest_completion(env: Any) -> int | None:
    """The longest completion of an LLMCompletion vector env (None if it cannot be told)."""
    inner = env.unwrapped if isinstance(env, gym.vector.VectorEnv) else getattr(env, "env", None)
    task = getattr(getattr(inner, "unwrapped", inner), "task", None)
    return None if task is None else int(task.new_tokens[1])


class TokenRLOO(_TokenGroupAlgorithm):
    """RLOO for token environments: each completion's advantage against the others of its prompt.

    The advantage of every token of completion i is its return (to go) minus the
    leave-one-out mean of the other completions of the same prompt at the same
    position (see :mod:`llm_gym.agents.group`); no critic is trained. Rollouts,
    KL, logging, callbacks, save/load and progress bars are TokenPPO's.

    Args:
        policy: ``"CausalLMPolicy"``.
        env: a vector env with groups: ``gym.make_vec("LLMCompletion-v0", num_envs=16,
            group_size=4)``, optionally wrapped by vector credit wrappers.
        learning_rate: Adam learning rate.
        n_steps: steps per rollout; default (and minimum) the longest completion.
        batch_size: minibatch size in transitions (minibatches hold whole episodes).
        n_epochs: epochs of the clipped surrogate per rollout.
        clip_range: the ratio clip.
        max_grad_norm: gradient-norm clip.
        estimator: ``"returns_to_go"`` or ``"group_centred"``.
        scale_rewards: ``"none"`` (RLOO) or ``"group"`` (divide by the group's std).
        length_normalisation: tokens weigh ``1 / len(completion)``; False: ``1 / max_new_tokens``.
        kl_coef, kl_target, kl_horizon, kl_coef_max, kl_controller, kl_estimator: the KL
            controller and what it reads (as TokenPPO).
        kl_pid_gains: ``(kp, ki, kd)`` of the ``"pid"`` controller (as TokenPPO).
        kl_mode: ``"reward"`` (a per-token reward penalty) or ``"loss"`` (k3 in the loss).
        reference_model: hub id or folder of the reference LM (``None``: the policy's).
        reward_scale: multiplies rewards before storage.
        policy_kwargs: options of the policy.
        **kwargs: other :class:`~stable_baselines3.PPO` options (``seed``, ``verbose``...).

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> envs = gym.make_vec("LLMCompletion-v0", num_envs=4, group_size=2, max_new_tokens=3,
        ...                     eos_ends_episode=False)
        >>> model = TokenRLOO("CausalLMPolicy", envs, batch_size=6, seed=0).learn(24)
        >>> abs(float(model.rollout_buffer.advantages.sum())) < 1e-5  # each group's sum to 0
        True
    """


class TokenGRPO(_TokenGroupAlgorithm):
    """GRPO for token environments: advantages against the group mean, scaled by its std.

    As :class:`TokenRLOO`, with the group mean (completion i included) as the
    baseline and ``scale_rewards="group"`` by default (TRL's name; ``"none"``
    for Dr. GRPO's unscaled advantages, with ``length_normalisation=False``).

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> envs = gym.make_vec("LLMCompletion-v0", num_envs=4, group_size=2, max_new_tokens=3)
        >>> model = TokenGRPO("CausalLMPolicy", envs, batch_size=6, kl_mode="loss", seed=0)
        >>> model = model.learn(24)
    """

    baseline = "mean"

    def __init__(self, *args: Any, scale_rewards: str = "group", **kwargs: Any) -> None:
        # a positional scale_rewards would be passed twice: refused, as Python does
        super().__init__(*args, scale_rewards=scale_rewards, **kwargs)  # type: ignore[misc]
