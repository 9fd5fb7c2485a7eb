"""Token-level MaskablePPO: actions restricted to the reference model's top-k / top-p tokens.

Holds :class:`MaskableCausalLMPolicy`, :class:`ReferenceMaskRolloutBuffer` and
:class:`TokenMaskablePPO`. This is the NLPO idea (Ramamurthy et al. 2023): the
policy may only pick tokens the frozen reference LM finds likely. The masks are
not stored: sb3-contrib's buffer keeps a float32 mask of vocabulary size per
transition (4 x V bytes: 201 kB for GPT-2's 50,257 tokens); here the policy
recomputes each mask from the reference model at the same observation, in
rollouts (from the reference's key/value cache, shared with the KL penalty) and in
updates (one reference forward per minibatch, without gradient). Stored mask
memory per transition: 0 bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBufferSamples
from sb3_contrib.common.maskable.distributions import MaskableCategoricalDistribution
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from llm_gym.agents.buffers import EpisodeRolloutBuffer
from llm_gym.agents.decoding import IncrementalDecoder, shared_prefix_hidden
from llm_gym.agents.kl import check_kl_estimator, make_kl_controller
from llm_gym.agents.policy import CausalLMCore, ids_device, load_causal_lm
from llm_gym.agents.ppo import (
    TokenCreditMixin,
    check_agent_options,
    token_buffer_class,
    token_vec_env,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "MaskableCausalLMPolicy",
    "ReferenceMaskRolloutBuffer",
    "TokenMaskablePPO",
    "top_k_top_p_mask",
]


def top_k_top_p_mask(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Boolean mask of the tokens kept by top-k and then top-p (nucleus) filtering.

    The most likely token is always kept.

    Example:
        >>> top_k_top_p_mask(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), top_k=3, top_p=0.7).tolist()
        [[True, True, False, False]]
    """
    keep = torch.ones_like(logits, dtype=torch.bool)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        keep &= logits >= kth
    if top_p is not None:
        probs = torch.softmax(logits.masked_fill(~keep, float("-inf")), -1)
        sorted_probs, order = probs.sort(-1, descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the tokens ranked above
        keep_sorted = before < top_p
        keep &= torch.zeros_like(keep).scatter(-1, order, keep_sorted)
    return keep


class MaskableCausalLMPolicy(CausalLMCore, MaskableActorCriticPolicy):
    """:class:`~llm_gym.agents.CausalLMPolicy` limited to the reference model's likely tokens.

    Args:
        observation_space: ``Dict(input_ids, attention_mask)`` Box space of the env.
        action_space: ``Discrete(vocab_size)``; must equal the LM's vocabulary.
        lr_schedule: learning-rate schedule (given by the algorithm).
        mask_top_k: keep the reference's k most likely tokens (``None``: no top-k).
        mask_top_p: then keep its smallest nucleus of probability ``p`` (``None``: no top-p).
        reference_model: hub id or folder of the reference LM (``None``: ``model``); it
            runs on ``reference_device`` in ``reference_dtype`` (policy options).
        **kwargs: the options of :class:`~llm_gym.agents.CausalLMPolicy`.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> env = gym.make("LLMCompletion-v0", max_new_tokens=4)
        >>> model = TokenMaskablePPO("CausalLMPolicy", env, n_steps=4, batch_size=8, n_envs=2,
        ...                          policy_kwargs={"mask_top_k": 5})
        >>> model.policy.mask_top_k
        5
    """

    action_dist: MaskableCategoricalDistribution  # type: ignore[assignment]

    def __init__(
        self,
        observation_space: spaces.Space[Any],
        action_space: spaces.Space[Any],
        lr_schedule: Schedule,
        mask_top_k: int | None = 50,
        mask_top_p: float | None = None,
        reference_model: str | None = None,
        **kwargs: Any,
    ) -> None:
        if mask_top_k is None and mask_top_p is None:
            raise ValueError(
                "set mask_top_k and/or mask_top_p; got neither (use TokenPPO for no mask)"
            )
        if mask_top_k is not None and mask_top_k < 1:
            raise ValueError(f"mask_top_k must be None or >= 1, got {mask_top_k}")
        if mask_top_p is not None and not 0 < mask_top_p <= 1:
            raise ValueError(f"mask_top_p must be None or in (0, 1], got {mask_top_p}")
        self.mask_top_k = mask_top_k
        self.mask_top_p = mask_top_p
        self.reference_model = reference_model
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)  # the optimizer only holds what exists so far
        name = self.reference_model or self.model_name
        self.reference = load_causal_lm(
            name, self.trust_remote_code, self.reference_dtype, self.reference_device
        ).requires_grad_(False)
        self.ref_decoder = IncrementalDecoder(self.reference.base_model)

    def to(self, *args: Any, **kwargs: Any) -> MaskableCausalLMPolicy:
        """Move the policy; the reference stays on ``reference_device`` when one is set."""
        super().to(*args, **kwargs)
        if self.reference_device is not None:
            # transformers types PreTrainedModel.to through a decorator that loses self
            self.reference.to(self.reference_device)  # type: ignore[arg-type]
        return self

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            mask_top_k=self.mask_top_k,
            mask_top_p=self.mask_top_p,
            reference_model=self.reference_model,
        )
        return data

    def train(self, mode: bool = True) -> MaskableCausalLMPolicy:
        super().train(mode)
        self.reference.eval()
        return self

    @torch.no_grad()
    def reference_mask(self, obs: PyTorchObs) -> torch.Tensor:
        """Boolean (batch, vocab) mask of the tokens the reference allows at each window."""
        device = ids_device(self.reference)
        window = cast(dict[str, torch.Tensor], obs)  # token environments observe a Dict
        ids = window["input_ids"].to(device).round().long()
        mask = window["attention_mask"].to(device).round().long()
        if self.training:
            hidden = shared_prefix_hidden(self.reference.base_model, ids, mask)
        else:
            hidden = self.ref_decoder(ids, mask)
        logits = self.reference.get_output_embeddings()(hidden).float()
        return top_k_top_p_mask(logits, self.mask_top_k, self.mask_top_p).to(
            window["input_ids"].device
        )

    def _masked_distribution(
        self,
        obs: PyTorchObs,
        hidden: torch.Tensor,
        action_masks: np.ndarray | torch.Tensor | None,
    ) -> MaskableCategoricalDistribution:
        distribution = self.action_dist.proba_distribution(action_logits=self.logits(hidden))
        allowed = self.reference_mask(obs)
        if action_masks is not None:
            allowed &= (
                torch.as_tensor(action_masks, device=allowed.device).bool().reshape(allowed.shape)
            )
        distribution.apply_masking(allowed)
        return distribution

    def forward(
        self, obs: PyTorchObs, deterministic: bool = False, action_masks: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.hidden_state(obs)
        distribution = self._masked_distribution(obs, hidden, action_masks)
        actions = distribution.get_actions(deterministic=deterministic)
        self.last_entropy = distribution.entropy().detach()
        # the masked distribution's normalised logits: what the exact KL reads
        self.last_logits = distribution.distribution.logits.detach()
        return actions, self._values(hidden, obs), distribution.log_prob(actions)

    def evaluate_actions(  # type: ignore[override]
        self, obs: PyTorchObs, actions: torch.Tensor, action_masks: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        hidden = self.hidden_state(obs)
        distribution = self._masked_distribution(obs, hidden, action_masks)
        return self._values(hidden, obs), distribution.log_prob(actions), distribution.entropy()

    # the masked distribution takes the environment's masks too, as sb3-contrib's policy's does
    def get_distribution(  # type: ignore[override]
        self, obs: PyTorchObs, action_masks: np.ndarray | None = None
    ) -> MaskableCategoricalDistribution:
        return self._masked_distribution(obs, self.hidden_state(obs), action_masks)

    def _predict(
        self,
        observation: PyTorchObs,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> torch.Tensor:
        return self.get_distribution(observation, action_masks).get_actions(
            deterministic=deterministic
        )


class ReferenceMaskRolloutBuffer(EpisodeRolloutBuffer):
    """TokenPPO's buffer serving MaskablePPO's update: no masks stored (0 bytes per transition).

    The policy recomputes each mask from the reference model, so samples carry
    ``action_masks=None`` (sb3-contrib's own buffer keeps a float32 mask of
    vocabulary size per transition). Minibatches hold whole episodes.
    """

    def reset(self) -> None:
        super().reset()
        # sb3-contrib's attribute for the stored masks, kept for code that reads it: empty
        self.action_masks = np.zeros((self.buffer_size, self.n_envs, 0), dtype=np.float32)

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> MaskableDictRolloutBufferSamples:
        samples = super()._get_samples(batch_inds, env)
        return MaskableDictRolloutBufferSamples(*samples, action_masks=None)  # type: ignore[arg-type]


# collect_rollouts takes the token-credit buffer this algorithm makes, where MaskablePPO's
# takes any rollout buffer
class TokenMaskablePPO(TokenCreditMixin, MaskablePPO):  # type: ignore[misc]
    """:class:`~llm_gym.agents.TokenPPO` on sb3-contrib's MaskablePPO, masks from the reference LM.

    Same token credit, KV-cached rollouts and KL penalty as TokenPPO; the policy
    samples only among the reference model's top-k / top-p tokens (policy options
    ``mask_top_k``, ``mask_top_p``). Environment-provided masks are not used.

    Args:
        policy: ``"CausalLMPolicy"`` (a :class:`MaskableCausalLMPolicy`).
        env: a token environment (copied ``n_envs`` times), an env id, or an SB3 VecEnv.
        n_envs: parallel environments made from ``env``.
        env_factory: function returning a new environment, used to make the copies.
        learning_rate: Adam learning rate.
        n_steps: steps per environment per rollout.
        batch_size: minibatch size in transitions.
        gamma: discount.
        gae_lambda: GAE lambda.
        max_grad_norm: gradient-norm clip.
        kl_coef: initial KL coefficient.
        kl_target: target KL per completion (nats) of the adaptive controller; ``None``: fixed.
        kl_horizon: adaptive controller horizon in timesteps.
        kl_coef_max: cap on the adaptive coefficient.
        kl_controller: ``"adaptive"`` or ``"pid"`` (as TokenPPO).
        kl_pid_gains: ``(kp, ki, kd)`` of the ``"pid"`` controller (as TokenPPO).
        kl_estimator: ``"sampled"`` or ``"exact"`` (as TokenPPO; the exact KL is that
            of the masked distribution).
        reward_scale: multiplies rewards before storage.
        **kwargs: other :class:`~sb3_contrib.MaskablePPO` options.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> env = gym.make("LLMCompletion-v0", max_new_tokens=4)
        >>> model = TokenMaskablePPO("CausalLMPolicy", env, n_steps=4, batch_size=8, n_envs=2)
        >>> model = model.learn(8)
    """

    policy_aliases = {**MaskablePPO.policy_aliases, "CausalLMPolicy": MaskableCausalLMPolicy}

    def __init__(
        self,
        policy: str | type[MaskableCausalLMPolicy],
        env: gym.Env | VecEnv | str | None,
        n_envs: int = 16,
        env_factory: Callable[[], gym.Env] | None = None,
        learning_rate: float | Callable[[float], float] = 3e-5,
        n_steps: int = 32,
        batch_size: int = 64,
        gamma: float = 1.0,
        gae_lambda: float = 0.9,
        max_grad_norm: float = 1.0,
        kl_coef: float = 0.05,
        kl_target: float | None = 6.0,
        kl_horizon: int = 10_000,
        kl_coef_max: float = 1.0,
        kl_controller: str = "adaptive",
        kl_estimator: str = "sampled",
        kl_pid_gains: Sequence[float] | None = None,
        reward_scale: float = 1.0,
        rollout_buffer_class: type | None = ReferenceMaskRolloutBuffer,
        **kwargs: Any,
    ) -> None:
        check_agent_options(
            "TokenMaskablePPO",
            n_steps=n_steps,
            batch_size=batch_size,
            n_envs=n_envs,
            n_epochs=kwargs.get("n_epochs", 10),
            gamma=gamma,
            gae_lambda=gae_lambda,
            reward_scale=reward_scale,
        )
        # checks the KL options
        make_kl_controller(kl_controller, kl_coef, kl_target, kl_horizon, kl_coef_max, kl_pid_gains)
        check_kl_estimator(kl_estimator)
        rollout_buffer_class = token_buffer_class(
            rollout_buffer_class or ReferenceMaskRolloutBuffer
        )
        env = token_vec_env("TokenMaskablePPO", env, n_envs, env_factory)
        self._init_token_credit(
            kl_coef,
            kl_target,
            kl_horizon,
            kl_coef_max,
            None,
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
            gamma=gamma,
            gae_lambda=gae_lambda,
            max_grad_norm=max_grad_norm,
            rollout_buffer_class=rollout_buffer_class,
            **kwargs,
        )

    #: the masks run the reference on every rollout step: the KL penalty reads that forward
    reference_per_step = True

    def _reference_lm(self) -> tuple[PreTrainedModel, IncrementalDecoder]:
        # the KL penalty reads the same reference forward the mask came from
        return self.policy.reference, self.policy.ref_decoder

    def learn(self, *args: Any, use_masking: bool = False, **kwargs: Any) -> TokenMaskablePPO:
        if use_masking:
            raise ValueError(
                "TokenMaskablePPO takes its masks from the reference model, not the environment; "
                "got use_masking=True, expected False"
            )
        # a call with six positional arguments would pass use_masking twice: refused as by Python
        return super().learn(*args, use_masking=False, **kwargs)  # type: ignore[misc]
