"""Signed credit: each token is paid its own signed contribution to the score, the rest at the end.

A redistribution wrapper (:class:`~llm_gym.wrappers.CreditWrapper`) spreads the
score with non-negative weights summing to 1, so every token's credit has the
score's sign: a negative word in a well-scored completion is still paid. A
signed decomposition gives each token its own term ``c_t`` of the score, of
either sign, and need not sum to R (the terms of the prompt's words, a reward
model that is not exactly the rule, a non-additive score). The contract here:

    r_t = beta * c_t + [t == T] * (R - beta * sum(c)),

so the token rewards still sum to the episode's return R for every completion
(the residual, whatever the decomposition misses, is on the last token, as the
sparse reward has it), the scalar reward stream stays the environment's sparse
one, and ``beta`` mixes dense and sparse as for the other wrappers. There is no
``info["credit_map"]``: no non-negative map m gives these rewards as ``m * R``.
A token whose deletion or rule term is zero gets zero, so the signed forms need
no centring baseline: the mean score is never spread over the tokens.

Holds :func:`signed_redistribute`, :class:`SignedCredit` (any decomposition, e.g.
the embedded world's rule, :func:`~llm_gym.assets.contributions.world_contributions`)
and :class:`LeaveOneOutCredit` (the reward model's own leave-one-out effect of each
token, :class:`~llm_gym.rewards.leave_one_out.LeaveOneOut`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from llm_gym.envs.protocol import SCORE
from llm_gym.rewards import CompletionBatch, RewardModel
from llm_gym.rewards.leave_one_out import LeaveOneOut
from llm_gym.wrappers.credit import CreditWrapper, check_beta, env_tokenizer, episode_ids

__all__ = ["LeaveOneOutCredit", "SignedCredit", "signed_redistribute"]

#: ``batch -> per completion, one signed contribution per token`` (score units)
Contributions = Callable[[CompletionBatch], list[np.ndarray]]


def signed_redistribute(
    contributions: np.ndarray, episode_return: float, beta: float
) -> np.ndarray:
    """r_t = beta * c_t + [t == T] * (R - beta * sum(c)): sums to R whatever c is.

    >>> signed_redistribute(np.array([0.0, -1.0, 0.5]), 2.0, 0.8).tolist()
    [0.0, -0.8, 2.8]
    """
    c = np.asarray(contributions, dtype=np.float64)
    token_rewards = beta * c
    token_rewards[-1] += episode_return - float(token_rewards.sum())
    return token_rewards


class SignedCredit(CreditWrapper, gym.utils.RecordConstructorArgs):
    """r_t = beta * c_t + [t == T] * (R - beta * sum(c)), c a signed decomposition of the score.

    Args:
        env: a token environment returning ``info["prompt_ids"]`` and
            ``info["completion_ids"]`` on the last step, with a ``tokenizer``
            attribute (or pass ``tokenizer=``).
        contributions: ``batch -> [c]``: for a
            :class:`~llm_gym.rewards.CompletionBatch` (here of one completion), each
            token's signed contribution to the score, in score units;
            :func:`~llm_gym.assets.contributions.world_contributions` is the embedded
            world's rule.
        beta: dense share of the credit, in [0, 1] (0: sparse).
        tokenizer: the environment's tokenizer, when it has no attribute for it.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> from llm_gym.assets.contributions import world_contributions
        >>> env = SignedCredit(gym.make("LLMCompletion-v0"), world_contributions)
        >>> _ = env.reset(seed=0)
        >>> done = False
        >>> while not done:
        ...     _, reward, done, _, info = env.step(env.action_space.sample())
        >>> bool(abs(sum(info["token_rewards"]) - info["score"]) < 1e-9)
        True
    """

    def __init__(
        self,
        env: gym.Env,
        contributions: Contributions,
        beta: float = 0.8,
        tokenizer: Any = None,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, contributions=contributions, beta=beta, tokenizer=tokenizer
        )
        CreditWrapper.__init__(self, env)
        if not callable(contributions):
            raise TypeError(
                f"contributions must be a function batch -> list of per-token arrays, "
                f"got {contributions!r}"
            )
        self.contributions_of = contributions
        self.beta = check_beta(beta)
        self._tokenizer = env_tokenizer(env, tokenizer, type(self).__name__)
        #: the last finished episode's contributions c (before beta)
        self.last_contributions: np.ndarray | None = None

    def contributions(self, info: dict[str, Any], n_tokens: int) -> np.ndarray:
        """The finished episode's c, checked: one finite value per completion token."""
        prompt, completion = episode_ids(info, type(self).__name__)
        batch = CompletionBatch([prompt], [completion], self._tokenizer)
        return self._checked(self._contributions_for(batch, info), n_tokens)

    def _contributions_for(self, batch: CompletionBatch, info: dict[str, Any]) -> Any:
        return self.contributions_of(batch)[0]

    def _checked(self, values: Any, n_tokens: int) -> np.ndarray:
        c = np.asarray(values, dtype=np.float64).reshape(-1)
        if c.shape != (n_tokens,) or not np.isfinite(c).all():
            shown = np.array2string(c[:8], precision=4)
            raise ValueError(
                f"{type(self).__name__} got contributions {shown} ({c.size} values) for a "
                f"completion of {n_tokens} tokens; expected one finite value per token"
            )
        return c

    def episode_credit(self, info: dict[str, Any], n_tokens: int) -> tuple[np.ndarray, None]:
        """Each token's own term of the score, the residual on the last token (no credit map)."""
        c = self.contributions(info, n_tokens) if self.beta > 0 else np.zeros(n_tokens)
        self.last_contributions = c
        return signed_redistribute(c, self._episode_return, self.beta), None

    def render(self) -> Any:
        if self.render_mode != "ansi" or self.last_token_rewards is None:
            return self.env.render()
        from llm_gym.wrappers.render import credit_ansi, token_strings

        ids = self.last_completion_ids or list(range(len(self.last_token_rewards)))
        return credit_ansi(token_strings(ids, self._tokenizer), self.last_token_rewards) + "\n"


class LeaveOneOutCredit(SignedCredit):
    """Signed credit with c_t = R - R(completion without token t), from the reward model itself.

    No rule and no attention: the reward model is asked, in ONE batched call of T
    rows per episode (T the completion's length), what the score would be without
    each token. R is the environment's ``info["score"]``, so the rows scored are
    only the T deletions.

    Args:
        env: as :class:`SignedCredit`; with ``reward_model=None`` it must have a
            ``reward_model`` attribute (``LLMCompletion-v0`` has).
        reward_model: the :class:`~llm_gym.rewards.RewardModel` to ask; ``None``:
            the environment's.
        beta: dense share of the credit, in [0, 1].
        tokenizer: the environment's tokenizer, when it has no attribute for it.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> env = LeaveOneOutCredit(gym.make("LLMCompletion-v0", max_new_tokens=8))
        >>> _ = env.reset(seed=0)
        >>> done = False
        >>> while not done:
        ...     _, reward, done, _, info = env.step(env.action_space.sample())
        >>> len(env.last_contributions) == len(info["completion_ids"])
        True
        >>> bool(abs(sum(info["token_rewards"]) - reward) < 1e-9)
        True
    """

    def __init__(
        self,
        env: gym.Env,
        reward_model: RewardModel | None = None,
        beta: float = 0.8,
        tokenizer: Any = None,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, reward_model=reward_model, beta=beta, tokenizer=tokenizer
        )
        if reward_model is None:
            if not env.has_wrapper_attr("reward_model"):
                raise gym.error.Error(
                    "LeaveOneOutCredit needs a reward model: pass reward_model=... or give the "
                    "environment a `reward_model` attribute"
                )
            reward_model = env.get_wrapper_attr("reward_model")
        self.leave_one_out = LeaveOneOut(reward_model)
        # the recorded arguments are this class's, taken above
        SignedCredit.__init__(self, env, self.leave_one_out, beta, tokenizer)

    def _contributions_for(self, batch: CompletionBatch, info: dict[str, Any]) -> Any:
        scores = np.array([info[SCORE]]) if SCORE in info else None
        return self.leave_one_out(batch, scores)[0]
