"""Token-level PPO: stable-baselines3's PPO with per-token credit and a KL penalty.

Holds :class:`TokenPPO`, :class:`KLController` and :func:`make_token_vec_env`.
What differs from SB3's PPO: the policy decodes incrementally during rollouts
(:class:`~llm_gym.agents.policy.CausalLMPolicy`), an internal callback applies
``info["token_rewards"]`` and subtracts ``kl_coef * (log pi - log pi_ref)`` per
token before GAE (the reference log-probs of a whole rollout in one batched
forward), and the KL coefficient adapts after each rollout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from llm_gym.agents.buffers import EpisodeRolloutBuffer
from llm_gym.agents.callbacks import TokenRewardCallback
from llm_gym.agents.decoding import IncrementalDecoder, episode_window_hidden
from llm_gym.agents.policy import CausalLMCore, CausalLMPolicy, load_causal_lm
from llm_gym.agents.vec_env import GymnasiumVecEnv

__all__ = ["KLController", "TokenCreditMixin", "TokenPPO", "make_token_vec_env"]


def as_token_vec_env(
    env: gym.Env | gym.vector.VectorEnv | VecEnv | str | None,
    n_envs: int,
    env_factory: Callable[[], gym.Env] | None = None,
) -> VecEnv | None:
    """What TokenPPO-style constructors accept, as an SB3 VecEnv: a Gymnasium VectorEnv
    through the adapter, an SB3 VecEnv (or None) as it is, else ``n_envs`` copies."""
    if isinstance(env, gym.vector.VectorEnv):
        return GymnasiumVecEnv(env)
    if env is None or isinstance(env, VecEnv):
        return env
    return make_token_vec_env(env, n_envs, env_factory)


def make_token_vec_env(
    env: gym.Env | str, n_envs: int, env_factory: Callable[[], gym.Env] | None = None
) -> VecEnv:
    """An SB3 ``DummyVecEnv`` of ``n_envs`` copies of a token environment.

    Copies come from ``env_factory`` when given, else from ``gym.make(env.spec)``
    (wrappers that inherit ``RecordConstructorArgs`` are recreated). Copies of an
    ``LLMCompletion`` env share its tokenizer and reward model.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> make_token_vec_env(gym.make("LLMCompletion-v0"), 3).num_envs
        3
    """
    if isinstance(env, str):
        env = gym.make(env)
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    if env_factory is not None:
        return DummyVecEnv([lambda: env] + [env_factory] * (n_envs - 1))
    if n_envs > 1 and env.spec is None:
        raise ValueError(
            f"cannot copy {env} into {n_envs} environments: it has no spec; pass env_factory "
            "(a function returning a new environment) or an SB3 VecEnv"
        )
    task = getattr(env.unwrapped, "task", None)
    shared = {"completion_task": task} if task is not None else {}
    return DummyVecEnv([lambda: env] + [lambda: gym.make(env.spec, **shared)] * (n_envs - 1))


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


class _KLPenaltyCallback(TokenRewardCallback):
    """TokenRewardCallback that also charges ``kl_coef * (log pi - log pi_ref)`` per token.

    The reference log-probs of a rollout's steps are computed once the rollout is
    collected, from the stored observations in one batched forward (or read from
    the reference decoder the policy already ran, see ``reference_per_step``), and the
    penalty is subtracted from the stored rewards before advantages are computed
    (:meth:`TokenCreditMixin.collect_rollouts` calls :meth:`before_returns`).
    """

    def step_penalties(self) -> np.ndarray | None:
        model: TokenPPO = self.model  # type: ignore[assignment]
        entropy = getattr(model.policy, "last_entropy", None)
        if entropy is not None:
            self._entropies.append(float(entropy.mean()))
        if model.ref_lm is not None and model.reference_per_step:
            # the policy already ran the reference on these windows: its decoder has them
            obs = self.locals["obs_tensor"]
            hidden = model.ref_decoder(
                obs["input_ids"].round().long(), obs["attention_mask"].round().long()
            )
            actions = torch.as_tensor(self.locals["actions"], device=model.device).long()
            with torch.no_grad():
                logits = model.ref_lm.get_output_embeddings()(hidden).float()
                log_probs = torch.log_softmax(logits, -1)
                self._ref_steps.append(log_probs.gather(1, actions.reshape(-1, 1)).squeeze(1))
        return None

    def before_returns(self) -> None:
        """Charge the KL penalty of the whole rollout (the buffer is full, GAE comes next)."""
        model: TokenPPO = self.model  # type: ignore[assignment]
        self._kl = None
        if model.ref_lm is None:
            return
        buffer = model.rollout_buffer
        obs = buffer.observations
        device = model.device
        if len(self._ref_steps) == buffer.buffer_size:
            ref_log_prob = torch.stack(self._ref_steps)
        else:
            ref_log_prob = reference_log_probs(
                model.ref_lm,
                torch.as_tensor(obs["input_ids"], device=device).round(),
                torch.as_tensor(obs["attention_mask"], device=device).round(),
                torch.as_tensor(buffer.actions.reshape(buffer.actions.shape[:2]), device=device),
            )
        log_prob = torch.as_tensor(buffer.log_probs, device=device)
        self._kl = (log_prob - ref_log_prob).cpu().numpy().astype(np.float64)
        self.apply_rollout_penalties(model.kl.coef * self._kl)

    @property
    def last_kl(self) -> np.ndarray | None:
        """Per-token ``log pi - log pi_ref`` of the last rollout, ``(n_steps, n_envs)``."""
        return self._kl

    def _on_rollout_start(self) -> None:
        super()._on_rollout_start()
        self._kl: np.ndarray | None = None
        self._entropies: list[float] = []
        self._ref_steps: list[torch.Tensor] = []

    def _on_rollout_end(self) -> None:
        super()._on_rollout_end()
        model: TokenPPO = self.model  # type: ignore[assignment]
        if self._entropies:
            self.logger.record("rollout/entropy_per_token", float(np.mean(self._entropies)))
        if model.ref_lm is None or self._kl is None:
            return
        # KL per completion: the mean per-token KL times the mean completion length
        lengths = [summary["length"] for summary in self.finished_episodes]
        length = float(np.mean(lengths)) if lengths else float(len(self._kl))
        kl = float(self._kl.mean()) * length
        self.logger.record("rollout/kl_per_completion", kl)
        self.logger.record("rollout/kl_coef", model.kl.coef)
        model.kl.update(kl, self._kl.size)


class TokenCreditMixin:
    """What TokenPPO and TokenMaskablePPO add to their SB3 base: reference LM, KL, token credit."""

    policy: Any
    device: torch.device
    #: the policy runs the reference LM on every rollout step anyway (TokenMaskablePPO's
    #: masks): read the KL's reference log-probs from its decoder instead of one batched
    #: forward per rollout
    reference_per_step = False

    def _init_token_credit(
        self,
        kl_coef: float,
        kl_target: float | None,
        kl_horizon: int,
        kl_coef_max: float,
        reference_model: str | None,
        reward_scale: float,
    ) -> None:
        self.kl = KLController(kl_coef, kl_target, kl_horizon, kl_coef_max)
        self.reference_model = reference_model
        self.reward_scale = reward_scale
        self.ref_lm: torch.nn.Module | None = None

    def _setup_model(self) -> None:
        super()._setup_model()  # type: ignore[misc]
        self.ref_lm = None
        if self.kl.coef > 0 or self.kl.target is not None:
            if self.reference_model is None and not isinstance(self.policy, CausalLMCore):
                raise ValueError(
                    f"the KL penalty needs a reference LM: pass reference_model=<id or folder> for "
                    f"policy {type(self.policy).__name__}, or kl_coef=0 with kl_target=None"
                )
            self.ref_lm, self.ref_decoder = self._reference_lm()
        self.token_callback = _KLPenaltyCallback(reward_scale=self.reward_scale)

    def _reference_lm(self) -> tuple[torch.nn.Module, IncrementalDecoder]:
        name = self.reference_model or getattr(self.policy, "model_name", None)
        trust = getattr(self.policy, "trust_remote_code", False)
        ref_lm = load_causal_lm(name, trust).to(self.device).requires_grad_(False)
        return ref_lm, IncrementalDecoder(ref_lm.base_model)

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: Any, *args: Any, **kwargs: Any
    ) -> bool:
        """The base algorithm's collection, with the rollout's KL penalty charged before GAE."""
        compute_returns = rollout_buffer.compute_returns_and_advantage

        def penalise_then_compute(*gae_args: Any, **gae_kwargs: Any) -> None:
            self.token_callback.before_returns()
            compute_returns(*gae_args, **gae_kwargs)

        rollout_buffer.compute_returns_and_advantage = penalise_then_compute
        try:
            return super().collect_rollouts(env, callback, rollout_buffer, *args, **kwargs)  # type: ignore[misc]
        finally:
            del rollout_buffer.compute_returns_and_advantage

    def _excluded_save_params(self) -> list[str]:
        # the reference model and callback are rebuilt from names by _setup_model
        return [*super()._excluded_save_params(), "ref_lm", "ref_decoder", "token_callback"]  # type: ignore[misc]

    def _init_callback(self, callback: Any, progress_bar: bool = False) -> BaseCallback:
        callbacks = [self.token_callback]
        if isinstance(callback, list):
            callbacks += callback
        elif callback is not None:
            callbacks.append(callback)
        return super()._init_callback(CallbackList(callbacks), progress_bar)  # type: ignore[misc]


class TokenPPO(TokenCreditMixin, PPO):
    """PPO for token environments: whole-episode credit, KV-cached rollouts, KL to a reference.

    Differences from stable-baselines3's PPO, nothing else: (1) ``"CausalLMPolicy"``
    decodes with a key/value cache in rollouts; (2) when an episode ends, its
    ``info["token_rewards"]`` replace the rewards stored for its tokens before GAE
    (credit from tokens of an earlier rollout is carried to the episode's first
    token in this one, so no credit is lost); (3) each token's reward is reduced by
    ``kl_coef * (log pi(a) - log pi_ref(a))``, ``pi`` the distribution actually
    sampled from (after the policy's temperature / top-k), ``pi_ref`` a frozen copy
    of the starting LM (untempered), with the coefficient fixed or adapted toward
    ``kl_target``. The update is SB3's PPO loss; its minibatches hold whole
    episodes and the policy reads all steps of an episode from one window forward.
    Logged: ``rollout/score_mean``, ``kl_per_completion``, ``kl_coef``,
    ``entropy_per_token``, ``completion_length``, ``distinct_token_ratio`` and
    token-reward statistics.

    Args:
        policy: ``"CausalLMPolicy"`` (or another ActorCriticPolicy class / alias).
        env: a token environment (its wrapper stack is kept and copied ``n_envs``
            times), an env id, an SB3 ``VecEnv``, or a Gymnasium ``VectorEnv`` such as
            ``gym.make_vec("LLMCompletion-v0", num_envs=16)`` (batched RM scoring);
            with the last two ``n_envs`` is ignored.
        learning_rate: Adam learning rate (3e-5: fast enough, keeps the KL tame).
        n_steps: steps per environment per rollout; a multiple of the completion
            length keeps episodes inside one rollout.
        batch_size: minibatch size in transitions.
        n_epochs: PPO epochs per rollout.
        gamma: discount (1.0: every credit scheme keeps each trajectory's return).
        gae_lambda: GAE lambda.
        clip_range: PPO ratio clip.
        clip_range_vf: value clip in reward units (``None``: off; scores are +-4).
        ent_coef: entropy bonus.
        vf_coef: value-loss weight.
        max_grad_norm: gradient-norm clip.
        n_envs: parallel environments made from ``env``.
        env_factory: function returning a new environment, used instead of the spec
            to make the copies.
        kl_coef: initial KL coefficient (0 with ``kl_target=None``: no reference model).
        kl_target: target KL per completion in nats for the adaptive controller;
            ``None``: fixed ``kl_coef``.
        kl_horizon: adaptive controller horizon in timesteps.
        kl_coef_max: cap on the adaptive coefficient.
        reference_model: hub id or folder of the reference LM (``None``: the policy's).
        reward_scale: multiplies rewards before storage (value targets scale with it).
        rollout_buffer_class: :class:`~llm_gym.agents.buffers.EpisodeRolloutBuffer`
            (minibatches of whole episodes: about one window forward per episode in
            the update) or SB3's ``DictRolloutBuffer`` (shuffled single transitions).
        policy_kwargs: options of the policy (``model``, ``critic``, ``temperature``...).
        **kwargs: other :class:`~stable_baselines3.PPO` options (``seed``,
            ``verbose``, ``tensorboard_log``, ``device``...).

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> env = gym.make("LLMCompletion-v0", max_new_tokens=4)
        >>> model = TokenPPO("CausalLMPolicy", env, n_steps=4, batch_size=8, n_envs=2, seed=0)
        >>> model = model.learn(8)
        >>> model.kl.coef > 0
        True
    """

    policy_aliases = {**PPO.policy_aliases, "CausalLMPolicy": CausalLMPolicy}

    def __init__(
        self,
        policy: str | type[CausalLMPolicy],
        env: gym.Env | VecEnv | str | None,
        learning_rate: float | Callable[[float], float] = 3e-5,
        n_steps: int = 32,
        batch_size: int = 64,
        n_epochs: int = 4,
        gamma: float = 1.0,
        gae_lambda: float = 0.9,
        clip_range: float = 0.2,
        clip_range_vf: float | None = None,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 1.0,
        n_envs: int = 16,
        env_factory: Callable[[], gym.Env] | None = None,
        kl_coef: float = 0.05,
        kl_target: float | None = 6.0,
        kl_horizon: int = 10_000,
        kl_coef_max: float = 1.0,
        reference_model: str | None = None,
        reward_scale: float = 1.0,
        rollout_buffer_class: type[RolloutBuffer] | None = EpisodeRolloutBuffer,
        policy_kwargs: dict[str, Any] | None = None,
        _init_setup_model: bool = True,
        **kwargs: Any,
    ) -> None:
        env = as_token_vec_env(env, n_envs, env_factory)
        self._init_token_credit(
            kl_coef, kl_target, kl_horizon, kl_coef_max, reference_model, reward_scale
        )
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            rollout_buffer_class=rollout_buffer_class,
            policy_kwargs=policy_kwargs,
            _init_setup_model=_init_setup_model,
            **kwargs,
        )
