"""AttentionCredit: Attention Based Credit (ABC), the reward model's attention spreads R."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from llm_gym.rewards import AttentionRequest, CompletionBatch, HFRewardModel, RewardModel
from llm_gym.wrappers.credit import CreditWrapper, check_beta, env_tokenizer, episode_ids

__all__ = ["AttentionCredit"]


class AttentionCredit(CreditWrapper, gym.utils.RecordConstructorArgs):
    """r_t = beta * a_t * R + (1 - beta) * R * [t == T], a_t the RM's attention (ABC).

    a_t is the attention from the reward model's scoring position (last token for
    decoder RMs, [CLS] for encoder RMs) to completion token t, heads combined,
    restricted to the completion and renormalised. On ``LLMCompletion-v0`` it is
    read in the same forward that computes R (no extra pass). The step rewards
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
            whose attention is read by scoring the finished episode again.
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
        self.reward_model = reward_model
        self.tokenizer = tokenizer
        if reward_model is not None:
            if not reward_model.supports_attention:
                raise ValueError(
                    f"reward_model {reward_model!r} cannot return attention; ABC needs a "
                    "transformer reward model such as HFRewardModel"
                )
            self.tokenizer = env_tokenizer(env, tokenizer, "AttentionCredit")
        elif hasattr(env.unwrapped, "attention_request"):
            env.unwrapped.attention_request = self.request
        else:
            raise gym.error.Error(
                f"AttentionCredit cannot get reward-model attention from {env.unwrapped!r}: it "
                "has no `attention_request` attribute (the env then returns "
                "info['rm_attention']); pass reward_model=... (and tokenizer=...) instead"
            )

    def credit_weights(self, info: dict[str, Any], n_tokens: int) -> np.ndarray:
        if "rm_attention" in info and self.reward_model is None:
            return np.asarray(info["rm_attention"], dtype=np.float64)
        if self.reward_model is None and "score" not in info:
            # cut off by an outer limit before the env scored it: keep the return where it fell
            weights = np.zeros(n_tokens)
            weights[-1] = 1.0
            return weights
        if self.reward_model is None:
            raise gym.error.Error(
                "AttentionCredit set env.unwrapped.attention_request but the last step's info "
                f"has no 'rm_attention' (keys: {sorted(info)}); the environment must score with "
                "that request and return the weights, or pass reward_model=..."
            )
        prompt, completion = episode_ids(info, "AttentionCredit")
        batch = CompletionBatch([prompt], [completion], self.tokenizer)
        return np.asarray(self.reward_model(batch, self.request).attention[0], dtype=np.float64)
