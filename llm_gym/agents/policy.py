"""A stable-baselines3 actor-critic policy that is a pretrained causal language model.

Holds :class:`CausalLMPolicy`: the action distribution is the LM's next-token
distribution at the newest token of the observation window; the value comes from
a small critic reading the same hidden state.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn
from torch.distributions import Categorical
from transformers import (
    AutoModelForCausalLM,
    LogitsProcessorList,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
)

from llm_gym import assets
from llm_gym.agents.decoding import IncrementalDecoder, shared_prefix_hidden
from llm_gym.rewards.loading import load_pretrained

__all__ = ["CRITICS", "CausalLMCore", "CausalLMPolicy", "check_token_spaces", "load_causal_lm"]

#: value-function designs: "detached" reads the LM hidden state through stop-gradient
#: (value loss cannot disturb the policy trunk), "shared" lets value gradients into it
CRITICS = ("detached", "shared")


def load_causal_lm(model: str | None, trust_remote_code: bool = False) -> nn.Module:
    """A causal LM by hub id or folder (``None``: the embedded world's tiny LM), in eval mode."""
    path = str(assets.LM_DIR) if model is None else model
    return load_pretrained(AutoModelForCausalLM, path, trust_remote_code=trust_remote_code).eval()


class CausalLMCore:
    """The causal-LM machinery shared by :class:`CausalLMPolicy` and the maskable policy."""

    action_space: spaces.Discrete
    observation_space: spaces.Dict
    optimizer_class: type[torch.optim.Optimizer]
    optimizer_kwargs: dict[str, Any]
    action_dist: CategoricalDistribution

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        model: str | None = None,
        critic: str = "detached",
        critic_hidden: int = 128,
        temperature: float = 1.0,
        top_k: int | None = None,
        n_tokens: int | None = None,
        dropout: bool = False,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> None:
        check_token_spaces(observation_space, action_space)
        if critic not in CRITICS:
            raise ValueError(f"critic must be one of {CRITICS}, got {critic!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be None or >= 1, got {top_k}")
        if n_tokens is not None and not 1 <= n_tokens <= action_space.n:
            raise ValueError(f"n_tokens must be None or in [1, {action_space.n}], got {n_tokens}")
        kwargs["ortho_init"] = False
        # read by _build, which ActorCriticPolicy.__init__ calls
        self.model_name = model
        self.critic = critic
        self.critic_hidden = critic_hidden
        self.temperature = float(temperature)
        self.top_k = top_k
        self.n_tokens = n_tokens
        self.dropout = dropout
        self.trust_remote_code = trust_remote_code
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)  # type: ignore[call-arg]

    # ---------------------------------------------------------------- building
    def _build(self, lr_schedule: Schedule) -> None:
        self.lm = load_causal_lm(self.model_name, self.trust_remote_code)
        vocab = self.lm.get_output_embeddings().out_features
        if vocab != self.action_space.n:
            raise ValueError(
                f"the LM {self.model_name or 'embedded tiny LM'!r} has a vocabulary of {vocab} "
                "tokens "
                f"but the action space is Discrete({self.action_space.n}); expected the same size "
                "(use the tokenizer the LM was trained with)"
            )
        high = int(self.observation_space["input_ids"].high.max())
        if high >= vocab:
            raise ValueError(
                f"observation input_ids go up to {high} but the LM has {vocab} tokens; "
                f"expected ids below {vocab}"
            )
        width = self.lm.get_output_embeddings().in_features
        if self.critic == "shared":
            self.value_net = nn.Linear(width, 1)
        else:
            self.value_net = nn.Sequential(
                nn.Linear(width, self.critic_hidden), nn.Tanh(), nn.Linear(self.critic_hidden, 1)
            )
        last = self.value_net if self.critic == "shared" else self.value_net[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.action_net = nn.Identity()
        self.logits_processor = self._logits_processor(vocab)
        self.decoder = IncrementalDecoder(self.lm.base_model)
        trainable = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = self.optimizer_class(trainable, lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            model=self.model_name,
            critic=self.critic,
            critic_hidden=self.critic_hidden,
            temperature=self.temperature,
            top_k=self.top_k,
            n_tokens=self.n_tokens,
            dropout=self.dropout,
            trust_remote_code=self.trust_remote_code,
        )
        return data

    def train(self, mode: bool = True) -> CausalLMCore:
        super().train(mode)
        if not self.dropout:
            self.lm.eval()
        if mode:  # the weights are about to change: cached keys and values go stale
            self.decoder.reset()
        return self

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        self.decoder.reset()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ---------------------------------------------------------------- forward
    def hidden_state(self, obs: PyTorchObs) -> torch.Tensor:
        """LM hidden state of the newest token of each observation window (batch, width)."""
        ids = obs["input_ids"].round().long()
        mask = obs["attention_mask"].round().long()
        if not self.training and not torch.is_grad_enabled():
            return self.decoder(ids, mask)
        return shared_prefix_hidden(self.lm.base_model, ids, mask)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits of the distribution sampled from (temperature, ``n_tokens`` and top-k applied)."""
        return self.logits_processor(None, self.lm.get_output_embeddings()(hidden).float())

    def _logits_processor(self, vocab: int) -> LogitsProcessorList:
        """transformers' processors for the sampling options, in the order they apply."""
        processors = LogitsProcessorList()
        if self.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(self.temperature))
        if self.n_tokens is not None and self.n_tokens < vocab:
            processors.append(SuppressTokensLogitsProcessor(list(range(self.n_tokens, vocab))))
        if self.top_k is not None and self.top_k < vocab:
            # the float32 minimum rather than -inf: masked logits stay finite
            processors.append(TopKLogitsWarper(self.top_k, filter_value=torch.finfo().min))
        return processors

    def _values(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.value_net(hidden.detach() if self.critic == "detached" else hidden)

    def _distribution(self, hidden: torch.Tensor) -> CategoricalDistribution:
        # SB3's proba_distribution, without torch's argument validation: the logits come
        # from the LM (finite, or -inf where n_tokens suppresses an id) and actions from the
        # Discrete(vocab) space, while validation costs a few tensor checks per call, every
        # rollout step
        self.action_dist.distribution = Categorical(logits=self.logits(hidden), validate_args=False)
        return self.action_dist

    def forward(
        self, obs: PyTorchObs, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.hidden_state(obs)
        distribution = self._distribution(hidden)
        actions = distribution.get_actions(deterministic=deterministic)
        #: mean per-token entropy of the last rollout step, for logging
        self.last_entropy = distribution.entropy().detach()
        return actions, self._values(hidden), distribution.log_prob(actions)

    def evaluate_actions(
        self, obs: PyTorchObs, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.hidden_state(obs)
        distribution = self._distribution(hidden)
        return self._values(hidden), distribution.log_prob(actions), distribution.entropy()

    def get_distribution(self, obs: PyTorchObs) -> CategoricalDistribution:
        return self._distribution(self.hidden_state(obs))

    def predict_values(self, obs: PyTorchObs) -> torch.Tensor:
        return self._values(self.hidden_state(obs))


class CausalLMPolicy(CausalLMCore, ActorCriticPolicy):
    """A causal LM as an actor-critic policy for token environments.

    The observation is a ``Dict(input_ids, attention_mask)`` window, left-padded so
    the newest token is last (as ``LLMCompletion-v0`` gives it). Logits at the last
    position are the action distribution, optionally with temperature and top-k;
    the log-probabilities PPO uses are those of the distribution actually sampled
    from. Pretrained weights are kept (no orthogonal re-initialisation) and there is
    no new vocab x vocab action layer. Dropout is off in rollouts and, by default,
    in updates too, so PPO's first-epoch probability ratio is exactly 1. In
    rollouts (eval mode, no gradient) the LM decodes incrementally with a
    key/value cache; the result equals a full forward over the window.

    Args:
        observation_space: ``Dict(input_ids, attention_mask)`` Box space of the env.
        action_space: ``Discrete(vocab_size)``; must equal the LM's vocabulary.
        lr_schedule: learning-rate schedule (given by the algorithm).
        model: hub id or folder of a causal LM; ``None``: the embedded tiny LM. A
            name, not a live model, so that ``save``/``load`` can rebuild it.
        critic: ``"detached"`` (default; an MLP on the stop-gradient hidden state)
            or ``"shared"`` (a linear head whose gradients reach the LM trunk).
        critic_hidden: width of the detached critic's hidden layer.
        temperature: divides the logits before sampling (1.0: the LM's own).
        top_k: sample only among the k most likely tokens (``None``: all).
        n_tokens: sample only ids below this, the tokenizer's size, when the LM's
            output layer is padded past it (Qwen, Llama-style); ``None``: every id.
        dropout: keep the LM's dropout active in updates (rollouts never use it).
        trust_remote_code: passed to ``from_pretrained``; off by default.
        **kwargs: other :class:`ActorCriticPolicy` options (``optimizer_class``,
            ``optimizer_kwargs``); ``ortho_init`` is always False.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> from llm_gym.agents import TokenPPO
        >>> env = gym.make("LLMCompletion-v0", max_new_tokens=4)
        >>> model = TokenPPO("CausalLMPolicy", env, n_steps=4, n_envs=2, seed=0)
        >>> obs, _ = env.reset(seed=0)
        >>> action, _ = model.predict(obs)
        >>> bool(0 <= int(action) < env.action_space.n)
        True
    """


def check_token_spaces(
    observation_space: spaces.Space, action_space: spaces.Space, user: str = "CausalLMPolicy"
) -> None:
    """Refuse spaces that are not a token environment's (``user`` names who needs them)."""
    if not isinstance(action_space, spaces.Discrete):
        raise ValueError(
            f"{user} needs a token environment: action_space must be Discrete(vocab_size), "
            f"got {action_space}"
        )
    if not (
        isinstance(observation_space, spaces.Dict)
        and {"input_ids", "attention_mask"} <= set(observation_space.spaces)
    ):
        raise ValueError(
            f"{user} needs a token environment: observation_space must be "
            "Dict(input_ids=Box, attention_mask=Box) as LLMCompletion-v0 gives it, got "
            f"{observation_space}"
        )
