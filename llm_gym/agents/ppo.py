"""Token-level PPO: stable-baselines3's PPO with per-token credit and a KL penalty.

Holds :class:`TokenCreditMixin` (what TokenPPO and TokenMaskablePPO add to their
SB3 base) and :class:`TokenPPO`. What differs from SB3's PPO lives in three of
SB3's hooks: the rollout buffer (:class:`~llm_gym.agents.buffers.TokenCreditBuffer`:
each episode's ``info["token_rewards"]`` and the KL penalty are applied before
GAE), ``collect_rollouts`` (below: it hands the buffer the token rewards and the
KL, and reports the rollout) and the policy
(:class:`~llm_gym.agents.CausalLMPolicy`: KV-cached rollouts, one window forward
per episode in updates). KL control is :mod:`llm_gym.agents.kl`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from llm_gym.agents.buffers import EpisodeRolloutBuffer, TokenCreditBuffer, TokenRolloutBuffer
from llm_gym.agents.credit import FinishedEpisode
from llm_gym.agents.decoding import IncrementalDecoder
from llm_gym.agents.kl import (
    KLController,
    ReferenceKL,
    check_kl_estimator,
    kl_per_completion,
    make_kl_controller,
    update_kl_limit,
)
from llm_gym.agents.policy import CausalLMCore, CausalLMPolicy, check_token_spaces, load_causal_lm
from llm_gym.agents.statistics import episode_summary, rollout_statistics
from llm_gym.agents.vec_env import as_token_vec_env, make_token_vec_env
from llm_gym.envs.protocol import SCORE, TOKEN_REWARDS, warn_unscored
from llm_gym.rewards.loading import HostToDevice

__all__ = ["KLController", "TokenCreditMixin", "TokenPPO", "make_token_vec_env"]


def token_buffer_class(buffer_class: type[RolloutBuffer] | None) -> type[TokenCreditBuffer]:
    """The token-credit buffer for a ``rollout_buffer_class`` option.

    ``None``: :class:`EpisodeRolloutBuffer`; SB3's ``DictRolloutBuffer``: its
    token-credit form :class:`TokenRolloutBuffer` (shuffled single transitions).
    """
    if buffer_class is None:
        return EpisodeRolloutBuffer
    if buffer_class is DictRolloutBuffer:
        return TokenRolloutBuffer
    if isinstance(buffer_class, type) and issubclass(buffer_class, TokenCreditBuffer):
        return buffer_class
    raise TypeError(
        f"rollout_buffer_class must be EpisodeRolloutBuffer, TokenRolloutBuffer (or SB3's "
        f"DictRolloutBuffer) or another TokenCreditBuffer subclass, got {buffer_class!r}"
    )


def check_agent_options(
    name: str,
    *,
    n_steps: int,
    batch_size: int,
    n_envs: int,
    n_epochs: int,
    gamma: float,
    gae_lambda: float,
    reward_scale: float,
) -> None:
    """Refuse option values before anything is built (stable-baselines3 would fail later)."""
    for option, value, low in (
        ("n_steps", n_steps, 1),
        ("batch_size", batch_size, 2),
        ("n_envs", n_envs, 1),
        ("n_epochs", n_epochs, 1),
    ):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}: {option} must be an int >= {low}, got {value!r}")
    for option, rate in (("gamma", gamma), ("gae_lambda", gae_lambda)):
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"{name}: {option} must be in [0, 1], got {rate!r}")
    if not np.isfinite(reward_scale) or reward_scale <= 0:
        raise ValueError(f"{name}: reward_scale must be a finite number > 0, got {reward_scale!r}")


def token_vec_env(
    name: str,
    env: gym.Env | gym.vector.VectorEnv | VecEnv | str | None,
    n_envs: int,
    env_factory: Callable[[], gym.Env] | None,
) -> VecEnv | None:
    """:func:`as_token_vec_env`, refusing environments that are not token environments."""
    vec_env = as_token_vec_env(env, n_envs, env_factory)
    if vec_env is not None:
        check_token_spaces(vec_env.observation_space, vec_env.action_space, name)
    return vec_env


if TYPE_CHECKING:
    from transformers import PreTrainedModel

    # the mixin runs inside an SB3 on-policy algorithm (PPO, MaskablePPO): type it as one
    _AlgorithmBase = OnPolicyAlgorithm
else:
    _AlgorithmBase = object


class TokenCreditMixin(_AlgorithmBase):
    """What TokenPPO and TokenMaskablePPO add to their SB3 base: reference LM, KL, token credit."""

    policy: Any
    device: torch.device
    env: VecEnv | None
    gamma: float
    num_timesteps: int
    _last_obs: Any
    _last_episode_starts: np.ndarray
    logger: Any
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
        kl_controller: str = "adaptive",
        kl_estimator: str = "sampled",
        kl_pid_gains: Sequence[float] | None = None,
    ) -> None:
        self.kl = make_kl_controller(
            kl_controller, kl_coef, kl_target, kl_horizon, kl_coef_max, kl_pid_gains
        )
        self.kl_estimator = check_kl_estimator(kl_estimator)
        self.reference_model = reference_model
        self.reward_scale = reward_scale
        self.ref_lm: PreTrainedModel | None = None
        self.reference: ReferenceKL | None = None
        #: per-token ``log pi - log pi_ref`` of the last rollout, ``(n_steps, n_envs)``
        self.last_kl: np.ndarray | None = None
        #: what the last rollout logged under ``rollout/`` (score_mean, kl_per_completion, ...)
        self.rollout_stats: dict[str, float] = {}

    def _setup_model(self) -> None:
        super()._setup_model()
        self.ref_lm = self.reference = None
        if self.kl.active:
            if self.reference_model is None and not isinstance(self.policy, CausalLMCore):
                raise ValueError(
                    f"the KL penalty needs a reference LM: pass reference_model=<id or folder> for "
                    f"policy {type(self.policy).__name__}, or kl_coef=0 with kl_target=None"
                )
            self.ref_lm, self.ref_decoder = self._reference_lm()
            self.reference = ReferenceKL(
                self.ref_lm,
                self.ref_decoder,
                self.reference_per_step,
                exact=self.kl_estimator == "exact",
            )

    def _reference_lm(self) -> tuple[PreTrainedModel, IncrementalDecoder]:
        if isinstance(self.policy, CausalLMCore):  # its reference_device / reference_dtype
            ref_lm = self.policy.load_reference(self.reference_model)
        else:
            trust = getattr(self.policy, "trust_remote_code", False)
            ref_lm = load_causal_lm(self.reference_model, trust, device=self.device)
            ref_lm.requires_grad_(False)
        return ref_lm, IncrementalDecoder(ref_lm.base_model)

    def collect_rollouts(  # type: ignore[override]
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: TokenCreditBuffer,
        n_rollout_steps: int,
        use_masking: bool = False,
    ) -> bool:
        """SB3's rollout loop, plus: token rewards and the KL penalty reach the buffer before GAE.

        Rewards are multiplied by ``reward_scale`` before anything sees them
        (callbacks included); ``use_masking`` is MaskablePPO's, and must stay False.
        """
        assert self._last_obs is not None, "no previous observation; learn() resets the envs"
        self.policy.set_training_mode(False)
        self._begin_rollout(env, rollout_buffer)
        rollout_buffer.reset()
        if self.reference is not None:
            self.reference.start_rollout()
        summaries: list[dict[str, float]] = []
        entropies: list[float] = []
        to_device = self._host_to_device()
        callback.on_rollout_start()
        for _ in range(n_rollout_steps):
            with torch.no_grad():
                obs_tensor = to_device.dict(self._last_obs)  # one copy per array and step
                actions, values, log_probs = self.policy(obs_tensor)
            entropy = getattr(self.policy, "last_entropy", None)
            if entropy is not None:
                entropies.append(float(entropy.mean()))
            if self.reference is not None:
                # the distribution just sampled from (exact KL only reads it)
                logits = getattr(self.policy, "last_logits", None)
                self.reference.record_step(obs_tensor, actions, logits)
            actions = actions.cpu().numpy()
            new_obs, rewards, dones, infos = env.step(actions)
            rewards *= self.reward_scale
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            rollout_buffer.add(
                self._last_obs,
                actions.reshape(-1, 1),
                rewards,
                self._last_episode_starts,
                values,
                log_probs,
            )
            credit = [
                self._token_rewards(info) if done else None for info, done in zip(infos, dones)
            ]
            for episode in rollout_buffer.end_episodes(dones, credit, infos):
                if self._reports(episode):
                    summaries.append(episode_summary(infos[episode.env], episode.length))
            for i in np.flatnonzero(dones):
                if infos[i].get("TimeLimit.truncated", False) and SCORE not in infos[i]:
                    warn_unscored(type(self).__name__)
                if (
                    infos[i].get("TimeLimit.truncated", False)
                    and infos[i].get("terminal_observation") is not None
                ):
                    terminal = self.policy.obs_to_tensor(infos[i]["terminal_observation"])[0]
                    with torch.no_grad():
                        value = self.policy.predict_values(terminal)[0]
                    rollout_buffer.add_timeout_bootstrap(i, float(self.gamma * value))
            self._last_obs, self._last_episode_starts = new_obs, dones
        if dones.all():
            # GAE multiplies the last values by 1 - done = 0: no forward over the new prompts
            values = torch.zeros(env.num_envs, 1, device=self.device)
        else:
            with torch.no_grad():
                # a token environment's observations are a dict of arrays
                observations = cast(dict[str, np.ndarray], new_obs)
                values = self.policy.predict_values(obs_as_tensor(observations, self.device))
        self.last_kl = None
        if self.reference is not None:
            self.last_kl = self.reference.rollout_kl(rollout_buffer, self.device)
            self._charge_kl(rollout_buffer, self.last_kl)
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        self._report_rollout(summaries, entropies)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _host_to_device(self) -> HostToDevice:
        """The rollout's observation copier (pinned staging buffers on a GPU), made once."""
        copier = getattr(self, "_obs_to_device", None)
        if copier is None or copier.device != self.device:
            copier = self._obs_to_device = HostToDevice(self.device)
        return copier

    def _begin_rollout(self, env: VecEnv, rollout_buffer: TokenCreditBuffer) -> None:
        """Before a rollout's first step (the group agents start every rollout afresh)."""
        if self.num_timesteps == 0:  # learn() has just reset the environments
            rollout_buffer.credit.forget()

    def _reports(self, episode: FinishedEpisode) -> bool:
        """Whether a finished episode counts in the rollout's statistics."""
        return True

    def _charge_kl(self, rollout_buffer: TokenCreditBuffer, kl: np.ndarray) -> None:
        """The KL term as a per-token reward penalty."""
        rollout_buffer.penalties = self.kl.coef * kl

    def _token_rewards(self, info: dict[str, Any]) -> np.ndarray | None:
        token_rewards = info.get(TOKEN_REWARDS)
        if token_rewards is None:
            return None
        return np.asarray(token_rewards, np.float64) * self.reward_scale

    def _report_rollout(self, summaries: list[dict[str, float]], entropies: list[float]) -> None:
        """Log the rollout under ``rollout/`` and adapt the KL coefficient."""
        stats = rollout_statistics(summaries)
        if entropies:
            stats["entropy_per_token"] = float(np.mean(entropies))
        if self.last_kl is not None:
            lengths = [summary["length"] for summary in summaries]
            stats["kl_per_completion"] = kl_per_completion(self.last_kl, lengths)
            exact = self.reference.last_exact_kl if self.reference is not None else None
            if exact is not None:
                # the controller reads the exact KL; the sampled one stays logged beside it
                stats["kl_sampled_per_completion"] = stats["kl_per_completion"]
                stats["kl_per_completion"] = kl_per_completion(exact, lengths)
            stats["kl_coef"] = self.kl.coef
            self.kl.update(stats["kl_per_completion"], self.last_kl.size)
        for key, value in stats.items():
            self.logger.record(f"rollout/{key}", value)
        self.rollout_stats = stats

    def _excluded_save_params(self) -> list[str]:
        # the reference model is rebuilt from its name by _setup_model
        return [
            *super()._excluded_save_params(),
            "ref_lm",
            "ref_decoder",
            "reference",
            "_obs_to_device",
        ]


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
        kl_controller: how the coefficient follows ``kl_target``: ``"adaptive"`` (the
            default: a clipped multiplicative step, about 2% per update with the
            default horizon) or ``"pid"`` (:class:`~llm_gym.agents.kl.PIDKLController`,
            which holds the target; ``kl_horizon`` is unused).
        kl_pid_gains: ``(kp, ki, kd)`` of the ``"pid"`` controller (``None``: its
            defaults, 0.15, 0.08, 0). In coefficient units per update: a task whose
            target needs a coefficient of several units needs gains to match.
        kl_step_fraction: a constrained update: before each update SB3's ``target_kl``
            is set by :func:`~llm_gym.agents.kl.update_kl_limit` to this fraction of the
            per-token KL budget left to ``kl_target`` (held to 1e-4 at or above it), so
            the update stops its epochs early near the target. ``None`` (the default):
            SB3's ``target_kl`` as given (off unless passed).
        kl_estimator: the KL per completion the controller reads (and logs):
            ``"sampled"`` (the log-ratio at the sampled tokens) or ``"exact"`` (each
            visited state's KL over the vocabulary: no token-sampling noise; logged
            beside ``kl_sampled_per_completion``). The penalty is the same either way.
        reference_model: hub id or folder of the reference LM (``None``: the policy's).
        reward_scale: multiplies rewards before storage (value targets scale with it).
        rollout_buffer_class: :class:`~llm_gym.agents.buffers.EpisodeRolloutBuffer`
            (minibatches of whole episodes: about one window forward per episode in
            the update) or :class:`~llm_gym.agents.buffers.TokenRolloutBuffer` (shuffled
            single transitions; SB3's ``DictRolloutBuffer`` means the same).
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
        env: gym.Env | gym.vector.VectorEnv | VecEnv | str | None,
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
        kl_controller: str = "adaptive",
        kl_estimator: str = "sampled",
        kl_pid_gains: Sequence[float] | None = None,
        kl_step_fraction: float | None = None,
        reference_model: str | None = None,
        reward_scale: float = 1.0,
        rollout_buffer_class: type[RolloutBuffer] | None = EpisodeRolloutBuffer,
        policy_kwargs: dict[str, Any] | None = None,
        _init_setup_model: bool = True,
        **kwargs: Any,
    ) -> None:
        check_agent_options(
            "TokenPPO",
            n_steps=n_steps,
            batch_size=batch_size,
            n_envs=n_envs,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            reward_scale=reward_scale,
        )
        # checks the KL options
        make_kl_controller(kl_controller, kl_coef, kl_target, kl_horizon, kl_coef_max, kl_pid_gains)
        check_kl_estimator(kl_estimator)
        if kl_step_fraction is not None:
            if kl_target is None:
                raise ValueError(
                    f"kl_step_fraction={kl_step_fraction!r} needs a kl_target (the budget it "
                    "spends), got kl_target=None"
                )
            if kwargs.get("target_kl") is not None:
                raise ValueError(
                    "pass kl_step_fraction or target_kl, not both: kl_step_fraction sets "
                    f"target_kl before every update (got target_kl={kwargs['target_kl']!r})"
                )
            update_kl_limit(0.0, kl_target, 1.0, kl_step_fraction)  # checks the fraction
        self.kl_step_fraction = kl_step_fraction
        rollout_buffer_class = token_buffer_class(rollout_buffer_class)
        env = token_vec_env("TokenPPO", env, n_envs, env_factory)
        self._init_token_credit(
            kl_coef,
            kl_target,
            kl_horizon,
            kl_coef_max,
            reference_model,
            reward_scale,
            kl_controller,
            kl_estimator,
            kl_pid_gains,
        )
        super().__init__(
            policy,
            env,  # type: ignore[arg-type]  # None when SB3's load() builds it, as SB3 does itself
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

    def train(self) -> None:
        """SB3's PPO update; with ``kl_step_fraction``, under a ``target_kl`` from the KL budget left."""
        kl = self.rollout_stats.get("kl_per_completion")
        length = self.rollout_stats.get("completion_length")
        if self.kl_step_fraction is not None and kl is not None and length:
            target = self.kl.target
            assert target is not None  # checked in __init__
            self.target_kl = update_kl_limit(kl, target, length, self.kl_step_fraction)
            self.logger.record("train/target_kl", self.target_kl)
        super().train()
