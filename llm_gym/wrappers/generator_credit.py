"""GeneratorAttentionCredit (ABC-D): a causal LM's attention over its completion spreads R."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from llm_gym.rewards.generator import GeneratorAttention
from llm_gym.wrappers.credit import CreditWrapper, check_beta, episode_ids

__all__ = ["GeneratorAttentionCredit"]


class GeneratorAttentionCredit(CreditWrapper, gym.utils.RecordConstructorArgs):
    """r_t = beta * a_t * R + (1 - beta) * R * [t == T], a_t from a causal LM (ABC-D).

    a_t is the generating LM's attention to completion token t, averaged over
    the generation steps (``steps="mean"``, the paper's ABC-D) or from the last
    step only. Not free: it costs ONE extra forward of ``model`` per episode,
    in eager attention. The LM must share the environment's vocabulary.

    Args:
        env: a token environment returning ``info["prompt_ids"]`` and
            ``info["completion_ids"]`` at episode end.
        model: causal LM (object, id or folder), e.g. the reference policy.
        beta: weight of the dense part in [0, 1].
        layers: LM layers to read, averaged; ``(-1,)`` the last.
        heads: ``"mean"`` or ``"max"`` over heads.
        steps: ``"mean"`` over generation steps or ``"last"``.
        device: where the LM runs; ``"auto"`` uses CUDA when available.
        baseline: the part of R kept on the last token, only R - b being spread
            (:class:`~llm_gym.wrappers.ScoreBaseline`): ``None`` (the paper's
            form), a number, or ``"running_mean"`` of earlier scores.
        baseline_rate: rate of the running mean.

    Example:
        >>> import gymnasium as gym, llm_gym, llm_gym.assets
        >>> env = GeneratorAttentionCredit(
        ...     gym.make("LLMCompletion-v0"), model=str(llm_gym.assets.LM_DIR), device="cpu")
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
        model: str | Any,
        beta: float = 0.8,
        layers: tuple[int, ...] | int = (-1,),
        heads: str = "mean",
        steps: str = "mean",
        device: str = "auto",
        baseline: float | str | None = None,
        baseline_rate: float = 0.01,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self,
            model=model,
            beta=beta,
            layers=layers,
            heads=heads,
            steps=steps,
            device=device,
            baseline=baseline,
            baseline_rate=baseline_rate,
        )
        CreditWrapper.__init__(self, env, baseline, baseline_rate)
        self.beta = check_beta(beta)
        layers = (layers,) if isinstance(layers, int) else tuple(layers)
        self.generator = GeneratorAttention(
            model, layers=layers, heads=heads, steps=steps, device=device
        )

    def credit_weights(self, info: dict[str, Any], n_tokens: int) -> np.ndarray:
        prompt, completion = episode_ids(info, "GeneratorAttentionCredit")
        return self.generator.weights(prompt, completion)
