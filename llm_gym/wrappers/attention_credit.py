"""AttentionCredit: Attention Based Credit (ABC), the reward model's attention spreads R."""

from __future__ import annotations

from typing import Any, cast

import gymnasium as gym
import numpy as np

from llm_gym.envs.protocol import ATTENTION_METADATA, RM_ATTENTION, SCORE, with_attention_request
from llm_gym.rewards import AttentionRequest, CompletionBatch, HFRewardModel, RewardModel
from llm_gym.wrappers.credit import CreditWrapper, check_beta, env_tokenizer, episode_ids

__all__ = ["AttentionCredit"]


class AttentionCredit(CreditWrapper, gym.utils.RecordConstructorArgs):
    """r_t = beta * a_t * R + (1 - beta) * R * [t == T], a_t the RM's attention (ABC).

    a_t is the attention from the reward model's scoring position (last token for
    decoder RMs, [CLS] for encoder RMs) to completion token t, heads combined,
    restricted to the completion and renormalised. The wrapper asks for it at
    every reset (the ``"rm_attention"`` reset option of :mod:`llm_gym.envs.protocol`)
    and reads ``info["rm_attention"]``; on ``LLMCompletion-v0`` it is read in the
    same forward that computes R (no extra pass). The step rewards
    stay sparse; the credit is in ``info["token_rewards"]`` (sums to R). An
    episode truncated before the environment scored it (no ``info["score"]``)
    keeps its return on its last token.

    Args:
        env: a token environment (see the protocol in :mod:`llm_gym.wrappers`).
        beta: weight of the dense part in [0, 1]; 0.8 as in the paper's
            experiments, 0 is the sparse reward.
        layers: reward-model layers to read, averaged; ``(-1,)`` the last (the
            paper's choice). Small RMs often attend sharply only in early layers:
            measure with :func:`llm_gym.rewards.credit_fidelity`.
        heads: ``"mean"`` or ``"max"`` over heads.
        rollout: use attention rollout through all layers instead (runs the RM in
            eager attention).
        reward_model: for environments that do not return ``info["rm_attention"]``:
            a :class:`~llm_gym.rewards.RewardModel` (or HF classifier id/folder)
            whose attention is read by scoring the finished episode again (one
            more RM forward per episode).
        tokenizer: the environment's tokenizer, for ``reward_model`` (default: the
            environment's ``tokenizer`` attribute).
        baseline: the part of R kept on the last token, only R - b being spread
            (:class:`~llm_gym.wrappers.ScoreBaseline`): ``None`` (the paper's
            form), a number, or ``"running_mean"`` of earlier scores.
        baseline_rate: rate of the running mean.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> env = AttentionCredit(gym.make("LLMCompletion-v0"), beta=0.8)
        >>> _ = env.reset(seed=0)
        >>> done = False
        >>> while not done:
        ...     _, reward, done, _, info = env.step(env.action_space.sample())
        >>> bool(abs(sum(info["token_rewards"]) - reward) < 1e-9)
        True
    """

    def __init__(
        self,
        env: gym.Env,
        beta: float = 0.8,
        layers: tuple[int, ...] | int = (-1,),
        heads: str = "mean",
        rollout: bool = False,
        reward_model: RewardModel | str | None = None,
        tokenizer: Any = None,
        baseline: float | str | None = None,
        baseline_rate: float = 0.01,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self,
            beta=beta,
            layers=layers,
            heads=heads,
            rollout=rollout,
            reward_model=reward_model,
            tokenizer=tokenizer,
            baseline=baseline,
            baseline_rate=baseline_rate,
        )
        CreditWrapper.__init__(self, env, baseline, baseline_rate)
        self.beta = check_beta(beta)
        layers = (layers,) if isinstance(layers, int) else tuple(layers)
        self.request = AttentionRequest(layers=layers, heads=heads, rollout=rollout)
        if isinstance(reward_model, str):
            reward_model = HFRewardModel(reward_model)
        # private: a public `reward_model` or `tokenizer` would shadow the environment's
        # for every wrapper outside this one (get_wrapper_attr finds the outermost)
        self._reward_model = reward_model
        self._tokenizer = None
        if reward_model is not None:
            if not reward_model.supports_attention:
                raise ValueError(
                    f"reward_model {reward_model!r} cannot return attention; ABC needs a "
                    "transformer reward model such as HFRewardModel"
                )
            self._tokenizer = env_tokenizer(env, tokenizer, "AttentionCredit")
        elif env.metadata.get(ATTENTION_METADATA) is False:
            raise TypeError(
                f"AttentionCredit: the reward model of {env.unwrapped!r} has no attention weights "
                f"(its metadata says {ATTENTION_METADATA!r}: False); ABC needs a transformer "
                "reward model such as HFRewardModel, or pass reward_model=... to score finished "
                "episodes again"
            )
        elif not env.metadata.get(ATTENTION_METADATA, False):
            raise gym.error.Error(
                f"AttentionCredit cannot get reward-model attention from {env.unwrapped!r}: its "
                f"metadata does not declare {ATTENTION_METADATA!r} (an environment that answers "
                "the 'rm_attention' reset option with info['rm_attention'], see "
                "llm_gym.envs.protocol); pass reward_model=... (and tokenizer=...) to score "
                "finished episodes again"
            )

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        if self._reward_model is None:
            kwargs["options"] = with_attention_request(kwargs.get("options"), self.request)
        return super().reset(**kwargs)

    def credit_weights(self, info: dict[str, Any], n_tokens: int) -> np.ndarray:
        if self._reward_model is None:
            weights = info.get(RM_ATTENTION, {}).get(self.request.key)
            if weights is not None:
                return np.asarray(weights, dtype=np.float64)
            if SCORE not in info:
                # cut off by an outer limit before the env scored it: keep the return where it fell
                weights = np.zeros(n_tokens)
                weights[-1] = 1.0
                return weights
            raise gym.error.Error(
                f"AttentionCredit asked for attention {self.request.key!r} at reset but the last "
                f"step's info has no info[{RM_ATTENTION!r}][{self.request.key!r}] (keys: "
                f"{sorted(info)}); the environment must answer the reset option, or pass "
                "reward_model=..."
            )
        prompt, completion = episode_ids(info, "AttentionCredit")
        batch = CompletionBatch([prompt], [completion], self._tokenizer)
        # RewardModel.__call__ refuses an output without the attention that was asked for
        attention = cast(list[np.ndarray], self._reward_model(batch, self.request).attention)
        return np.asarray(attention[0], dtype=np.float64)
