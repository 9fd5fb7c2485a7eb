"""Group advantages: each completion's credit against the other completions of its prompt.

Holds :func:`group_advantages` (the estimators of :mod:`llm_gym.agents.group`, on the
completions of one prompt) and :class:`GroupRolloutBuffer` (TokenPPO's rollout buffer
with group advantages in place of GAE, and per-token loss weights).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from stable_baselines3.common.buffers import DictRolloutBuffer
from stable_baselines3.common.type_aliases import TensorDict
from stable_baselines3.common.vec_env import VecNormalize

from llm_gym.agents.buffers import EpisodeMinibatches, TokenCreditBuffer
from llm_gym.agents.credit import FinishedEpisode
from llm_gym.envs.protocol import CREDIT_MAP, GROUP, GROUP_EPISODE

__all__ = ["BASELINES", "ESTIMATORS", "SCALES", "GroupRolloutBuffer", "group_advantages"]

#: the advantage estimators of the group agents (``estimator=``)
ESTIMATORS = ("returns_to_go", "group_centred")
#: the group baselines (``baseline=``): the other completions' mean, or the whole group's
BASELINES = ("leave_one_out", "mean")
#: how advantages are scaled (``scale_rewards=``): by the group's standard deviation, or not
SCALES = ("group", "none")


def _returns_to_go(rewards: np.ndarray) -> np.ndarray:
    return np.cumsum(rewards[..., ::-1], axis=-1)[..., ::-1]


def _baseline(values: np.ndarray, baseline: str) -> np.ndarray:
    """Per row of ``values`` (completions x ...), the other rows' mean or the group mean."""
    k = len(values)
    if baseline == "mean":
        return np.broadcast_to(values.mean(0), values.shape)
    return (values.sum(0) - values) / (k - 1)


def group_advantages(
    token_rewards: list[np.ndarray],
    credit_maps: list[np.ndarray] | None = None,
    kl_terms: list[np.ndarray] | None = None,
    estimator: str = "returns_to_go",
    baseline: str = "leave_one_out",
    scale_rewards: str = "none",
    eps: float = 1e-4,
) -> list[np.ndarray]:
    """Per-token advantages of the k completions of one prompt.

    Args:
        token_rewards: completion i's token rewards (one per token; they sum to its return).
        credit_maps: completion i's credit map (``group_centred`` only; None: sparse).
        kl_terms: completion i's per-token KL reward term (``-kl_coef * kl``), or None.
        estimator: ``"returns_to_go"`` or ``"group_centred"`` (see the module docstring).
        baseline: ``"leave_one_out"`` (RLOO) or ``"mean"`` (GRPO).
        scale_rewards: ``"group"`` divides by the group's standard deviation of the
            returns (plus ``eps``), ``"none"`` does not.

    Example:
        >>> rewards = [np.array([0.0, 3.0]), np.array([0.0, 1.0]), np.array([2.0])]
        >>> [a.tolist() for a in group_advantages(rewards)]  # RLOO: R_i - mean_{j != i} R_j
        [[1.5, 1.5], [-1.5, -1.5], [0.0]]
    """
    if estimator not in ESTIMATORS or baseline not in BASELINES or scale_rewards not in SCALES:
        raise ValueError(
            f"expected estimator in {ESTIMATORS}, baseline in {BASELINES}, scale_rewards in "
            f"{SCALES}; got {estimator!r}, {baseline!r}, {scale_rewards!r}"
        )
    k = len(token_rewards)
    if k < 2 and baseline == "leave_one_out":
        raise ValueError("a leave-one-out baseline needs at least 2 completions per prompt")
    lengths = [len(r) for r in token_rewards]
    width = max(lengths)

    def to_go(rows: list[np.ndarray]) -> np.ndarray:
        """Returns-to-go, a completion shorter than t holding its last token's value at t."""
        out = np.zeros((k, width))
        for i, row in enumerate(rows):
            values = _returns_to_go(np.asarray(row, dtype=np.float64))
            out[i, : len(values)] = values
            out[i, len(values) :] = values[-1]
        return out

    rewards = [np.asarray(r, dtype=np.float64) for r in token_rewards]
    kl = [np.asarray(t, dtype=np.float64) for t in kl_terms] if kl_terms else None
    returns = np.array([r.sum() for r in rewards]) + (
        np.array([t.sum() for t in kl]) if kl else 0.0
    )
    if estimator == "returns_to_go":
        totals = to_go([r + t for r, t in zip(rewards, kl)] if kl else rewards)
        advantages = totals - _baseline(totals, baseline)
    else:
        if credit_maps is None:
            credit_maps = [np.eye(n)[-1] for n in lengths]
        maps = to_go(credit_maps)
        scores = np.array([r.sum() for r in rewards])
        advantages = (scores - _baseline(scores, baseline))[:, None] * maps
        if kl:
            kl_to_go = to_go(kl)
            advantages = advantages + kl_to_go - _baseline(kl_to_go, baseline)
    if scale_rewards == "group":
        advantages = advantages / (returns.std() + eps)
    return [advantages[i, :n] for i, n in enumerate(lengths)]


def _rows(episode: FinishedEpisode) -> list[int]:
    """The rows of an episode all of whose steps are in this rollout (a completion)."""
    return cast(list[int], episode.rows)


class GroupRolloutBufferSamples(NamedTuple):
    observations: TensorDict
    actions: torch.Tensor
    old_values: torch.Tensor
    old_log_prob: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    weights: torch.Tensor
    ref_log_prob: torch.Tensor


class GroupRolloutBuffer(EpisodeMinibatches, TokenCreditBuffer, DictRolloutBuffer):
    """TokenPPO's buffer with group advantages in place of GAE, and per-token loss weights.

    Each sub-environment's first episode of the rollout is one completion; its
    group's other completions are those with the same ``info["group"]`` and
    ``info["group_episode"]``. Attributes set by the agent before advantages are
    computed: :attr:`estimator`, :attr:`baseline`, :attr:`scale_rewards`,
    :attr:`length_normalisation`, :attr:`max_tokens`, and the rollout's
    :attr:`kl_terms` (``-kl_coef * kl`` per transition, or None) and
    :attr:`ref_log_probs` (for a KL loss term).
    """

    estimator = "returns_to_go"
    baseline = "leave_one_out"
    scale_rewards = "none"
    length_normalisation = True
    max_tokens: int | None = None

    def reset(self) -> None:
        super().reset()
        self.weights = np.zeros((self.buffer_size, self.n_envs), dtype=np.float32)
        self.ref_log_probs = np.zeros((self.buffer_size, self.n_envs), dtype=np.float32)
        self.kl_terms: np.ndarray | None = None

    def completions(
        self,
    ) -> dict[tuple[int, int], list[tuple[FinishedEpisode, np.ndarray, dict[str, Any]]]]:
        """The rollout's completions (each env's first episode) by ``(group, group_episode)``.

        Each starts on the rollout's first row, so every one of its steps has a row here.
        """
        groups: dict[tuple[int, int], list[tuple[FinishedEpisode, np.ndarray, dict[str, Any]]]] = {}
        for episode, token_rewards, info in self.finished:
            if episode.rows[0] != 0:
                continue  # an episode started after the env's completion: padding
            if GROUP not in info or GROUP_EPISODE not in info:
                raise ValueError(
                    f"an episode's info has no {GROUP!r} / {GROUP_EPISODE!r} (keys: {sorted(info)}); "
                    "group agents need sub-environments in groups sharing prompts, e.g. "
                    "gym.make_vec('LLMCompletion-v0', num_envs=16, group_size=4)"
                )
            rewards = token_rewards
            if rewards is None:
                rewards = self.rewards[_rows(episode), episode.env].astype(np.float64)
            groups.setdefault((int(info[GROUP]), int(info[GROUP_EPISODE])), []).append(
                (episode, rewards, info)
            )
        finished_envs = sum(len(members) for members in groups.values())
        if finished_envs < self.n_envs:
            raise ValueError(
                f"only {finished_envs} of {self.n_envs} sub-environments finished their completion "
                f"within the rollout of {self.buffer_size} steps; n_steps must be at least the "
                "longest completion"
            )
        return groups

    def compute_returns_and_advantage(self, last_values: torch.Tensor, dones: np.ndarray) -> None:
        self.advantages[:] = 0.0
        self.weights[:] = 0.0
        groups = self.completions()
        n_completions = sum(len(m) for m in groups.values())
        for members in groups.values():
            kl_terms = None
            if self.kl_terms is not None:
                kl_terms = [
                    self.kl_terms[_rows(e), e.env].astype(np.float64) for e, _, _ in members
                ]
            maps = None
            if self.estimator == "group_centred":
                maps = [
                    np.asarray(info.get(CREDIT_MAP, np.eye(e.length)[-1]), dtype=np.float64)
                    for e, _, info in members
                ]
            advantages = group_advantages(
                [rewards for _, rewards, _ in members],
                maps,
                kl_terms,
                self.estimator,
                self.baseline,
                self.scale_rewards,
            )
            for (episode, _, _), advantage in zip(members, advantages, strict=True):
                self.advantages[_rows(episode), episode.env] = advantage
                # max_tokens is set by the agent before every update
                per_token = (
                    episode.length if self.length_normalisation else cast(int, self.max_tokens)
                )
                self.weights[_rows(episode), episode.env] = 1.0 / (n_completions * per_token)
        self.returns = self.advantages.copy()  # no critic: nothing regresses on returns

    def get(  # type: ignore[override]
        self, batch_size: int | None = None
    ) -> Generator[GroupRolloutBufferSamples, None, None]:
        if not self.generator_ready:
            for name in ("weights", "ref_log_probs"):
                self.__dict__[name] = self.swap_and_flatten(self.__dict__[name])
        # EpisodeMinibatches.get yields what _get_samples below returns
        yield from super().get(batch_size)  # type: ignore[misc]

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> GroupRolloutBufferSamples:
        samples = DictRolloutBuffer._get_samples(self, batch_inds, env)
        return GroupRolloutBufferSamples(
            *samples,
            weights=self.to_torch(self.weights[batch_inds].flatten()),
            ref_log_prob=self.to_torch(self.ref_log_probs[batch_inds].flatten()),
        )
