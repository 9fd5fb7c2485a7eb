"""The KL penalty to a frozen reference model, and the controllers of its coefficient.

Holds :class:`KLController` (a fixed coefficient, or one adapted toward a target
KL per completion by a clipped multiplicative step), :class:`PIDKLController`
(the coefficient as the multiplier of a KL constraint, set by a PID loop, which
holds the target), :data:`KL_CONTROLLERS` and :func:`make_kl_controller` (a
controller by name), :func:`coefficient_trace` (the coefficients a controller
used, replayed from the KL it saw), :data:`KL_ESTIMATORS`, :class:`ReferenceKL`
(the per-token ``log pi - log pi_ref`` of a rollout, and optionally each state's
exact KL over the vocabulary), :func:`reference_log_probs`,
:func:`reference_logits` and :func:`state_kl`. TokenPPO subtracts
``coef * KL`` from each stored reward before advantages are computed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from llm_gym.agents.decoding import IncrementalDecoder, episode_window_hidden

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "KL_CONTROLLERS",
    "KL_ESTIMATORS",
    "CoefficientController",
    "KLController",
    "PIDKLController",
    "ReferenceKL",
    "coefficient_trace",
    "make_kl_controller",
    "check_kl_estimator",
    "reference_log_probs",
    "reference_logits",
    "state_kl",
    "update_kl_limit",
]

#: the controllers an agent's ``kl_controller`` option names
KL_CONTROLLERS = ("adaptive", "pid")

#: what a KL controller reads (an agent's ``kl_estimator`` option): ``"sampled"``, the
#: mean over the rollout's tokens of ``log pi(a) - log pi_ref(a)`` at the sampled
#: token (the results folders before the option existed); ``"exact"``, each visited
#: state's ``KL(pi(.|s) || pi_ref(.|s))`` summed over the vocabulary. Both estimate the
#: same KL per completion (by the chain rule); the exact one has no token-sampling
#: noise. The penalty charged to the rewards is the sampled log-ratio either way.
KL_ESTIMATORS = ("sampled", "exact")


def check_kl_estimator(estimator: str) -> str:
    """``estimator`` if it is one of :data:`KL_ESTIMATORS`; a ValueError naming it otherwise.

    Example:
        >>> check_kl_estimator("k3")
        Traceback (most recent call last):
        ...
        ValueError: kl_estimator must be one of ('sampled', 'exact'), got 'k3'
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    return estimator


class CoefficientController(Protocol):
    """What an agent needs of a KL controller: its coefficient, and an update per rollout."""

    coef: float

    @property
    def target(self) -> float | None: ...

    @property
    def active(self) -> bool: ...

    def update(self, kl: float, steps: int) -> float: ...


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


class PIDKLController:
    """The KL coefficient as the multiplier of a constraint KL <= target, set by a PID loop.

    The PID Lagrangian of Stooke, Achiam and Abbeel (ICML 2020): with the error
    ``e = clip(kl / target - 1, -1, error_max)`` of the last rollout,

    - integral: ``I <- clip(I + ki * e, 0, coef_max)`` (anti-windup at both ends);
    - coefficient: ``coef = clip(I + kp * e + kd * max(e - e_prev, 0), 0, coef_max)``.

    The integral settles at the coefficient that holds the target; the
    proportional term answers a KL spike in the update it appears, where a
    multiplicative step of 2% per update (:class:`KLController`'s default) takes
    dozens of updates. The derivative acts on rises only, so a falling KL does not
    drop the coefficient below what the integral holds. Errors are relative to
    the target, so the gains are in coefficient units per update whatever the
    target. A coefficient cannot push KL up: below the target the integral
    empties and the penalty vanishes until the policy drifts there.

    Args:
        coef: initial value of the integral (the coefficient before any rollout).
        target: target KL per completion in nats (required).
        coef_max: upper bound of the coefficient and of the integral.
        kp: proportional gain.
        ki: integral gain per update.
        kd: derivative gain on rises of the error.
        error_max: cap on the relative error, so one burst of KL moves the
            integral by at most ``ki * error_max``.

    Example:
        >>> controller = PIDKLController(0.05, target=6.0, kp=0.1, ki=0.02)
        >>> controller.update(kl=12.0, steps=1024)  # error 1: 0.07 + 0.1 * 1
        0.17
        >>> controller.update(kl=6.0, steps=1024)  # on target: the integral holds
        0.07
    """

    def __init__(
        self,
        coef: float,
        target: float | None,
        coef_max: float = 1.0,
        kp: float = 0.15,
        ki: float = 0.08,
        kd: float = 0.0,
        error_max: float = 3.0,
    ) -> None:
        if target is None or not np.isfinite(target) or target <= 0:
            raise ValueError(
                f"the pid KL controller needs a target > 0 nats, got {target!r}; use "
                "kl_controller='adaptive' with kl_target=None for a fixed coefficient"
            )
        for name, value in (("coef", coef), ("coef_max", coef_max)):
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name, value in (("kp", kp), ("ki", ki), ("kd", kd), ("error_max", error_max)):
            if not np.isfinite(value) or value < 0:
                raise ValueError(
                    f"PIDKLController: {name} must be a finite number >= 0, got {value!r}"
                )
        self.target, self.coef_max = float(target), float(coef_max)
        self.kp, self.ki, self.kd, self.error_max = (
            float(kp),
            float(ki),
            float(kd),
            float(error_max),
        )
        self.integral = min(float(coef), self.coef_max)
        self.coef = self.integral
        self.last_error: float | None = None

    @property
    def active(self) -> bool:
        """Always: a target is always set."""
        return True

    def update(self, kl: float, steps: int) -> float:
        """Take in the mean KL per completion of the last rollout; return the new coefficient.

        ``steps`` (the rollout's transitions) is accepted for the controllers' common
        interface; the gains are per update.
        """
        if not np.isfinite(kl):
            return self.coef
        error = float(np.clip(kl / self.target - 1.0, -1.0, self.error_max))
        self.integral = float(np.clip(self.integral + self.ki * error, 0.0, self.coef_max))
        rise = 0.0 if self.last_error is None else max(error - self.last_error, 0.0)
        self.last_error = error
        coef = self.integral + self.kp * error + self.kd * rise
        self.coef = round(float(np.clip(coef, 0.0, self.coef_max)), 12)
        return self.coef


def make_kl_controller(
    kind: str,
    coef: float,
    target: float | None,
    horizon: int = 10_000,
    coef_max: float = 1.0,
    pid_gains: Sequence[float] | None = None,
) -> KLController | PIDKLController:
    """The KL controller an agent's ``kl_controller`` option names (its options checked).

    ``"adaptive"``: :class:`KLController` (``horizon`` sets its rate; fixed when
    ``target`` is None); ``"pid"``: :class:`PIDKLController`, with ``pid_gains``
    ``(kp, ki, kd)`` when given and its default gains otherwise. The gains are in
    coefficient units per update, so a task that needs a larger coefficient to hold
    its target (a long completion) needs larger gains to get there in time.

    Example:
        >>> make_kl_controller("pid", 0.05, 6.0, coef_max=5.0, pid_gains=(0.6, 0.3, 0.0)).ki
        0.3
        >>> make_kl_controller("fast", 0.05, 6.0)
        Traceback (most recent call last):
        ...
        ValueError: kl_controller must be one of ('adaptive', 'pid'), got 'fast'
    """
    if kind not in KL_CONTROLLERS:
        raise ValueError(f"kl_controller must be one of {KL_CONTROLLERS}, got {kind!r}")
    if pid_gains is not None:
        gains = tuple(pid_gains)
        if kind != "pid":
            raise ValueError(
                f"kl_pid_gains={gains!r} are the gains of kl_controller='pid', got "
                f"kl_controller={kind!r}"
            )
        if len(gains) != 3:
            raise ValueError(f"kl_pid_gains must be three numbers (kp, ki, kd), got {gains!r}")
    if kind == "adaptive":
        return KLController(coef, target, horizon, coef_max)
    if pid_gains is None:
        return PIDKLController(coef, target, coef_max)
    kp, ki, kd = (float(g) for g in pid_gains)
    return PIDKLController(coef, target, coef_max, kp=kp, ki=ki, kd=kd)


def coefficient_trace(
    controller: CoefficientController, kls: Sequence[float] | np.ndarray, steps: int
) -> np.ndarray:
    """The coefficient a fresh ``controller`` charges in each rollout, given each rollout's KL.

    A controller is a deterministic function of the KL it has seen, so the
    coefficients of a finished run are replayed exactly from its KL curve
    (``curves.csv``'s ``kl`` column); ``controller`` itself is not changed.

    Example:
        >>> coefficient_trace(KLController(0.1, 6.0, horizon=1000), [12.0, 12.0], steps=500).tolist()
        [0.1, 0.11]
    """
    replay = copy.deepcopy(controller)
    coefs = []
    for kl in kls:
        coefs.append(replay.coef)
        if np.isfinite(kl):
            replay.update(float(kl), steps)
    return np.asarray(coefs, dtype=np.float64)


@torch.no_grad()
def reference_logits(
    lm: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """``lm``'s next-token logits for a rollout's ``(steps, envs, window)`` observations.

    One batched forward of ``lm`` over about one window per episode
    (:func:`~llm_gym.agents.decoding.episode_window_hidden`), not one per step; the
    result has shape ``(steps, envs, vocab)``, float32 whatever ``lm``'s dtype, on
    ``lm``'s device (the inputs are moved there once).

    Example:
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> lm = GPT2LMHeadModel(GPT2Config(vocab_size=11, n_embd=8, n_layer=1, n_head=2)).eval()
        >>> ids = torch.tensor([[[0, 5, 6]], [[5, 6, 7]]])  # (2 steps, 1 env, window 3)
        >>> reference_logits(lm, ids, (ids > 0).long()).shape
        torch.Size([2, 1, 11])
    """
    device = next(lm.parameters()).device
    ids, mask = input_ids.to(device).long(), attention_mask.to(device).long()
    hidden = episode_window_hidden(lm.base_model, ids, mask)
    return lm.get_output_embeddings()(hidden).float()


def _chosen_log_probs(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    chosen = logits.gather(-1, actions.to(logits.device).long()[..., None]).squeeze(-1)
    return chosen - torch.logsumexp(logits, -1)


@torch.no_grad()
def reference_log_probs(
    lm: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    actions: torch.Tensor,
) -> torch.Tensor:
    """``log pi_ref(action | window)`` for a rollout's ``(steps, envs, window)`` observations.

    :func:`reference_logits`, normalised, at the ``(steps, envs)`` ``actions``; float32
    on ``lm``'s device.

    Example:
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> lm = GPT2LMHeadModel(GPT2Config(vocab_size=11, n_embd=8, n_layer=1, n_head=2)).eval()
        >>> ids = torch.tensor([[[0, 5, 6]], [[5, 6, 7]]])  # (2 steps, 1 env, window 3)
        >>> reference_log_probs(lm, ids, (ids > 0).long(), torch.tensor([[7], [8]])).shape
        torch.Size([2, 1])
    """
    return _chosen_log_probs(reference_logits(lm, input_ids, attention_mask), actions)


def state_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) = sum_a p(a) (log p(a) - log q(a))`` over the last axis of log-probabilities.

    Ids that ``p`` cannot sample (probability 0: suppressed, masked or outside the
    top-k) add nothing, whatever ``q`` gives them.

    Example:
        >>> log_p = torch.log(torch.tensor([[0.5, 0.5, 0.0]]))
        >>> round(float(state_kl(log_p, torch.log(torch.tensor([[0.25, 0.25, 0.5]])))), 6)
        0.693147
    """
    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(-1)


class ReferenceKL:
    """``log pi(a) - log pi_ref(a)`` of every transition of a rollout, and each state's exact KL.

    Args:
        lm: the frozen reference causal LM.
        decoder: an incremental decoder over ``lm``'s trunk. With ``per_step`` the
            policy has just run it on each rollout step's windows (TokenMaskablePPO's
            masks come from the reference), so :meth:`record_step` reads the
            reference's log-probs from it; otherwise the whole rollout's are computed
            in one batched forward at its end.
        per_step: see ``decoder``.
        exact: also compute, for every transition, ``KL(pi(.|s) || pi_ref(.|s))``
            over the vocabulary (:attr:`last_exact_kl`), from the policy's logits
            that :meth:`record_step` receives. Without ``per_step`` this keeps the
            policy's log-probabilities of the whole rollout until its end: steps x
            envs x vocab floats on the reference's device.
    """

    def __init__(
        self,
        lm: PreTrainedModel,
        decoder: IncrementalDecoder,
        per_step: bool,
        exact: bool = False,
    ) -> None:
        self.lm, self.decoder, self.per_step, self.exact = lm, decoder, per_step, exact
        #: where the reference runs (its own device: the policy's, a second GPU, the CPU)
        self.device = next(lm.parameters()).device
        self._steps: list[torch.Tensor] = []
        self._policy_log_probs: list[torch.Tensor] = []
        self._exact_steps: list[torch.Tensor] = []
        #: per-transition exact KL of the last :meth:`rollout_kl`, ``(n_steps, n_envs)``
        #: float64 (``exact`` only; otherwise None)
        self.last_exact_kl: np.ndarray | None = None

    def start_rollout(self) -> None:
        self._steps, self._policy_log_probs, self._exact_steps = [], [], []
        self.last_exact_kl = None

    @torch.no_grad()
    def record_step(
        self,
        obs: dict[str, torch.Tensor],
        actions: torch.Tensor,
        policy_logits: torch.Tensor | None = None,
    ) -> None:
        """Keep what this step needs: the reference's log-prob of its actions (``per_step``),
        the policy's ``(envs, vocab)`` logits of the distribution sampled from (``exact``)."""
        if self.exact:
            if policy_logits is None:
                raise ValueError(
                    "kl_estimator='exact' needs the policy's logits at every rollout step "
                    "(policy.last_logits, which CausalLMPolicy sets); got None"
                )
            policy_log_probs = torch.log_softmax(policy_logits.to(self.device).float(), -1)
            if not self.per_step:
                self._policy_log_probs.append(policy_log_probs)
        if not self.per_step:
            return
        ids = obs["input_ids"].to(self.device).round().long()
        hidden = self.decoder(ids, obs["attention_mask"].to(self.device).round().long())
        log_probs = torch.log_softmax(self.lm.get_output_embeddings()(hidden).float(), -1)
        chosen = actions.to(self.device).reshape(-1, 1).long()
        self._steps.append(log_probs.gather(1, chosen).squeeze(1))
        if self.exact:
            self._exact_steps.append(state_kl(policy_log_probs, log_probs))

    @torch.no_grad()
    def rollout_kl(self, buffer: Any, device: torch.device | None = None) -> np.ndarray:
        """Per-transition KL of a full rollout buffer, ``(n_steps, n_envs)`` float64.

        The sampled log-ratio; with ``exact``, :attr:`last_exact_kl` is set as well.
        The buffer's observations go to the reference's device in one copy per array;
        the difference is taken on the host, in float32 (``device`` is not used: the
        reference has its own).
        """
        exact = None
        if len(self._steps) == buffer.buffer_size:
            ref_log_prob = torch.stack(self._steps)
            if self.exact:
                exact = torch.stack(self._exact_steps)
        else:
            obs = buffer.observations
            # the buffer stores token ids as float32: copied as they are (half int64's bytes)
            logits = reference_logits(
                self.lm,
                torch.as_tensor(obs["input_ids"]).to(self.device).round(),
                torch.as_tensor(obs["attention_mask"]).to(self.device).round(),
            )
            actions = torch.as_tensor(buffer.actions.reshape(buffer.actions.shape[:2]))
            ref_log_prob = _chosen_log_probs(logits, actions)
            if self.exact:
                if len(self._policy_log_probs) != buffer.buffer_size:
                    raise RuntimeError(
                        f"kl_estimator='exact' recorded {len(self._policy_log_probs)} rollout "
                        f"steps of policy logits for a buffer of {buffer.buffer_size}"
                    )
                ref_log_softmax = torch.log_softmax(logits, -1)
                exact = state_kl(torch.stack(self._policy_log_probs), ref_log_softmax)
                self._policy_log_probs = []
        if exact is not None:
            self.last_exact_kl = exact.cpu().numpy().astype(np.float64)
        log_prob = torch.as_tensor(buffer.log_probs)
        return (log_prob - ref_log_prob.cpu()).numpy().astype(np.float64)


def kl_per_completion(kl: np.ndarray, lengths: Sequence[float]) -> float:
    """Mean per-token KL times the mean completion length (the rollout's length without episodes)."""
    length = float(np.mean(lengths)) if len(lengths) else float(len(kl))
    return float(kl.mean()) * length


def update_kl_limit(
    kl: float, target: float, length: float, fraction: float, floor: float = 1e-4
) -> float:
    """The per-token KL an update may move the policy, given the budget left to the reference.

    A constrained update (``TokenPPO(kl_step_fraction=...)``): the budget left,
    ``target - kl`` nats per completion, spread over the ``length`` tokens of a
    completion, of which the update may spend ``fraction``; at or above the target
    the update is held to ``floor``. The result is SB3's PPO ``target_kl`` for the
    next update (its epochs stop once a minibatch's approximate KL between the
    rollout's policy and the updated one exceeds 1.5 times it). A heuristic: the KL
    to the reference is not the sum of the steps' KLs, so the penalty still holds
    the target and the limit slows the updates that would overshoot it.

    Example:
        >>> update_kl_limit(kl=2.0, target=6.0, length=20, fraction=0.5)
        0.1
        >>> update_kl_limit(kl=7.0, target=6.0, length=20, fraction=0.5)
        0.0001
    """
    for name, value in (("target", target), ("length", length), ("fraction", fraction)):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"update_kl_limit: {name} must be a finite number > 0, got {value!r}")
    if not np.isfinite(floor) or floor <= 0:
        raise ValueError(f"update_kl_limit: floor must be a finite number > 0, got {floor!r}")
    if not np.isfinite(kl):
        return floor
    return round(max(fraction * (target - kl) / length, floor), 12)
