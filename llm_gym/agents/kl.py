"""The KL penalty to a frozen reference model, and the controller of its coefficient.

Holds :class:`KLController` (a fixed coefficient, or one adapted toward a target
KL per completion), :class:`ReferenceKL` (the per-token ``log pi - log pi_ref`` of
a rollout) and :func:`reference_log_probs`. TokenPPO subtracts ``coef * KL`` from
each stored reward before advantages are computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from llm_gym.agents.decoding import IncrementalDecoder, episode_window_hidden

__all__ = ["KLController", "ReferenceKL", "reference_log_probs"]


class KLController:
    """KL coefficient: fixed, or adapted toward a target KL per completion (Ziegler et al. 2019).

    After each rollout, ``coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * steps / horizon``,
    capped at ``coef_max`` so a KL spike cannot freeze learning.

    Args:
        coef: initial coefficient.
        target: target KL in nats per completion; ``None`` keeps ``coef`` fixed.
        horizon: timesteps over which the coefficient moves by the clipped error.
        coef_max: upper bound of the adaptive coefficient.

    Example:
        >>> controller = KLController(0.1, target=6.0, horizon=1000, coef_max=1.0)
        >>> controller.update(kl=12.0, steps=500)
        0.11
    """

    def __init__(
        self, coef: float, target: float | None, horizon: int = 10_000, coef_max: float = 1.0
    ) -> None:
        if coef < 0 or coef_max < 0:
            raise ValueError(f"coef and coef_max must be >= 0, got {coef} and {coef_max}")
        if target is not None and target <= 0:
            raise ValueError(f"target must be None or > 0 nats, got {target}")
        if horizon <= 0:
            raise ValueError(f"horizon must be > 0 timesteps, got {horizon}")
        self.coef, self.target, self.horizon, self.coef_max = float(coef), target, horizon, coef_max

    @property
    def active(self) -> bool:
        """Whether there is a penalty at all (a coefficient, or a target to adapt it to)."""
        return self.coef > 0 or self.target is not None

    def update(self, kl: float, steps: int) -> float:
        """Adapt to the mean KL per completion of the last rollout; return the new coefficient."""
        if self.target is not None:
            error = float(np.clip(kl / self.target - 1.0, -0.2, 0.2))
            self.coef = round(
                min(self.coef * (1.0 + error * steps / self.horizon), self.coef_max), 12
            )
        return self.coef


@torch.no_grad()
def reference_log_probs(
    lm: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    actions: torch.Tensor,
) -> torch.Tensor:
    """``log pi_ref(action | window)`` for a rollout's ``(steps, envs, window)`` observations.

    One batched forward of ``lm`` over about one window per episode
    (:func:`~llm_gym.agents.decoding.episode_window_hidden`), not one per step;
    ``actions`` has shape ``(steps, envs)``.
    """
    hidden = episode_window_hidden(lm.base_model, input_ids.long(), attention_mask.long())
    logits = lm.get_output_embeddings()(hidden).float()
    chosen = logits.gather(-1, actions.long()[..., None]).squeeze(-1)
    return chosen - torch.logsumexp(logits, -1)


class ReferenceKL:
    """``log pi(a) - log pi_ref(a)`` of every transition of a rollout.

    Args:
        lm: the frozen reference causal LM.
        decoder: an incremental decoder over ``lm``'s trunk. With ``per_step`` the
            policy has just run it on each rollout step's windows (TokenMaskablePPO's
            masks come from the reference), so :meth:`record_step` reads the
            reference's log-probs from it; otherwise the whole rollout's are computed
            in one batched forward at its end.
        per_step: see ``decoder``.
    """

    def __init__(self, lm: torch.nn.Module, decoder: IncrementalDecoder, per_step: bool) -> None:
        self.lm, self.decoder, self.per_step = lm, decoder, per_step
        self._steps: list[torch.Tensor] = []

    def start_rollout(self) -> None:
        self._steps = []

    @torch.no_grad()
    def record_step(self, obs: dict[str, torch.Tensor], actions: torch.Tensor) -> None:
        """Keep the reference's log-prob of this step's actions (``per_step`` only)."""
        if not self.per_step:
            return
        hidden = self.decoder(obs["input_ids"].round().long(), obs["attention_mask"].round().long())
        log_probs = torch.log_softmax(self.lm.get_output_embeddings()(hidden).float(), -1)
        self._steps.append(log_probs.gather(1, actions.reshape(-1, 1).long()).squeeze(1))

    @torch.no_grad()
    def rollout_kl(self, buffer: Any, device: torch.device) -> np.ndarray:
        """Per-transition KL of a full rollout buffer, ``(n_steps, n_envs)`` float64."""
        if len(self._steps) == buffer.buffer_size:
            ref_log_prob = torch.stack(self._steps)
        else:
            obs = buffer.observations
            ref_log_prob = reference_log_probs(
                self.lm,
                torch.as_tensor(obs["input_ids"], device=device).round(),
                torch.as_tensor(obs["attention_mask"], device=device).round(),
                torch.as_tensor(buffer.actions.reshape(buffer.actions.shape[:2]), device=device),
            )
        log_prob = torch.as_tensor(buffer.log_probs, device=device)
        return (log_prob - ref_log_prob).cpu().numpy().astype(np.float64)


def kl_per_completion(kl: np.ndarray, lengths: Sequence[float]) -> float:
    """Mean per-token KL times the mean completion length (the rollout's length without episodes)."""
    length = float(np.mean(lengths)) if len(lengths) else float(len(kl))
    return float(kl.mean()) * length
