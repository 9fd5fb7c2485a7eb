"""A stable-baselines3 actor-critic policy that is a pretrained causal language model.

Holds :class:`CausalLMPolicy`: the action distribution is the LM's next-token
distribution at the newest token of the observation window; the value comes from
a small critic reading the same hidden state.

Precision and placement: the LM's weights are float32 (the optimizer's copy);
``dtype="bfloat16"`` (or ``"float16"``) runs its forwards under autocast while the
output layer, the log-probabilities and the critic stay float32
(:mod:`llm_gym.agents.precision`). The policy runs on the algorithm's ``device``;
``reference_device`` and ``reference_dtype`` say where and in what precision the
frozen reference LM (the KL penalty's, the masks') runs.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, cast

import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
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
from llm_gym.agents.precision import GradientScaler, autocast, float32_head
from llm_gym.rewards.loading import load_pretrained, model_positions, resolve_device, resolve_dtype

if TYPE_CHECKING:
    from transformers import PreTrainedModel
    from typing_extensions import Self

    # the mixin runs inside an SB3 policy (CausalLMPolicy, the maskable one): type it as one
    _PolicyBase = BasePolicy
else:
    _PolicyBase = object

__all__ = [
    "CRITICS",
    "CausalLMCore",
    "CausalLMPolicy",
    "check_token_spaces",
    "load_causal_lm",
    "sample_categorical",
]

#: value-function designs: "detached" reads the LM hidden state through stop-gradient
#: (value loss cannot disturb the policy trunk), "shared" lets value gradients into it
CRITICS = ("detached", "shared", "reward-model")


def load_causal_lm(
    model: str | None,
    trust_remote_code: bool = False,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> PreTrainedModel:
    """A causal LM by hub id or folder (``None``: the embedded world's tiny LM), in eval mode.

    ``dtype``: the weights' type (``None``: as saved); ``device``: where it goes
    (``None``: the CPU).

    Example:
        >>> load_causal_lm(None, dtype="bfloat16").dtype
        torch.bfloat16
    """
    path = str(assets.LM_DIR) if model is None else model
    options = {} if dtype is None else {"dtype": resolve_dtype(dtype)}
    lm = load_pretrained(AutoModelForCausalLM, path, trust_remote_code=trust_remote_code, **options)
    if device is not None:
        lm = lm.to(resolve_device(device))
    return lm.eval()


def token_ids(tensor: torch.Tensor) -> torch.Tensor:
    """Token ids (or a mask) as int64: SB3's buffers store them as float32, rollouts as int64.

    Example:
        >>> token_ids(torch.tensor([2.0, 5.0])).tolist()
        [2, 5]
    """
    return (tensor.round() if tensor.is_floating_point() else tensor).long()


def ids_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (where its inputs must be)."""
    return next(module.parameters()).device


def _dtype_option(
    dtype: str | torch.dtype | None, torch_dtype: str | torch.dtype | None, name: str
) -> torch.dtype | None:
    """``dtype`` or its transformers 4 spelling ``torch_dtype`` (at most one of them)."""
    if (
        dtype is not None
        and torch_dtype is not None
        and resolve_dtype(dtype) != resolve_dtype(torch_dtype)
    ):
        raise ValueError(
            f"got {name}={dtype!r} and torch_{name}={torch_dtype!r}; expected one of them"
        )
    return resolve_dtype(dtype if dtype is not None else torch_dtype, name)


class CausalLMCore(_PolicyBase):
    """The causal-LM machinery shared by :class:`CausalLMPolicy` and the maskable policy."""

    action_space: spaces.Discrete
    observation_space: spaces.Dict
    optimizer_class: type[torch.optim.Optimizer]
    optimizer_kwargs: dict[str, Any]
    action_dist: CategoricalDistribution
    action_net: nn.Module
    value_net: nn.Linear  # as SB3's ActorCriticPolicy types it; _build sets other critics too

    def __init__(
        self,
        observation_space: spaces.Space[Any],
        action_space: spaces.Space[Any],
        lr_schedule: Schedule,
        model: str | None = None,
        critic: str = "detached",
        critic_hidden: int = 128,
        critic_model: str | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        n_tokens: int | None = None,
        dropout: bool = False,
        trust_remote_code: bool = False,
        dtype: str | torch.dtype | None = None,
        reference_device: str | torch.device | None = None,
        reference_dtype: str | torch.dtype | None = None,
        torch_dtype: str | torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        check_token_spaces(observation_space, action_space)
        if critic not in CRITICS:
            raise ValueError(f"critic must be one of {CRITICS}, got {critic!r}")
        if (critic == "reward-model") != (critic_model is not None):
            raise ValueError(
                "critic 'reward-model' needs critic_model (the reward model's hub id or folder) "
                f"and no other critic takes one; got critic={critic!r}, critic_model={critic_model!r}"
            )
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be None or >= 1, got {top_k}")
        vocab = cast(spaces.Discrete, action_space).n  # check_token_spaces refused others
        if n_tokens is not None and not 1 <= n_tokens <= vocab:
            raise ValueError(f"n_tokens must be None or in [1, {vocab}], got {n_tokens}")
        kwargs["ortho_init"] = False
        compute = _dtype_option(dtype, torch_dtype, "dtype")
        #: the dtype the LM's forwards run in under autocast (None: float32, no autocast)
        self.compute_dtype = None if compute == torch.float32 else compute
        self.reference_dtype = resolve_dtype(reference_dtype, "reference_dtype")
        self.reference_device = (
            None if reference_device is None else resolve_device(reference_device)
        )
        # read by _build, which ActorCriticPolicy.__init__ calls
        self.model_name = model
        self.critic = critic
        self.critic_hidden = critic_hidden
        self.critic_model = critic_model
        self.temperature = float(temperature)
        self.top_k = top_k
        self.n_tokens = n_tokens
        self.dropout = dropout
        self.trust_remote_code = trust_remote_code
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    # ---------------------------------------------------------------- building
    def _build(self, lr_schedule: Schedule) -> None:
        # float32 weights whatever the checkpoint's type: they are the optimizer's copy
        self.lm = load_causal_lm(self.model_name, self.trust_remote_code, dtype=torch.float32)
        vocab = self.lm.get_output_embeddings().out_features
        if vocab != self.action_space.n:
            raise ValueError(
                f"the LM {self.model_name or 'embedded tiny LM'!r} has a vocabulary of {vocab} "
                "tokens "
                f"but the action space is Discrete({self.action_space.n}); expected the same size "
                "(use the tokenizer the LM was trained with)"
            )
        high = int(cast(spaces.Box, self.observation_space["input_ids"]).high.max())
        if high >= vocab:
            raise ValueError(
                f"observation input_ids go up to {high} but the LM has {vocab} tokens; "
                f"expected ids below {vocab}"
            )
        length = cast(spaces.Box, self.observation_space["input_ids"]).shape[-1]
        positions = model_positions(self.lm.config)
        if positions is not None and length > positions:
            raise ValueError(
                f"observations hold up to {length} tokens (prompt + completion) but the LM "
                f"{self.model_name or 'embedded tiny LM'!r} has {positions} positions; use an LM "
                "with more positions (the long task's: llm_gym.envs.task_policy_path('long')) "
                "or shorter prompts and completions"
            )
        width = self.lm.get_output_embeddings().in_features
        value_net: nn.Module
        if self.critic == "reward-model":
            value_net = self._reward_model_critic(high)
        else:
            if self.critic == "shared":
                last = value_net = nn.Linear(width, 1)
            else:
                # built first layer first: the order draws their initial weights from torch's
                # generator, so any other order would change every run
                first = nn.Linear(width, self.critic_hidden)
                last = nn.Linear(self.critic_hidden, 1)
                value_net = nn.Sequential(first, nn.Tanh(), last)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        # SB3 types value_net as the Linear head its own _build makes
        self.value_net = value_net  # type: ignore[assignment]
        self.action_net = nn.Identity()
        # looked up once (transformers finds it anew on every call); a tuple, so that it is
        # not registered a second time as a submodule
        self._output_layer = (self.lm.get_output_embeddings(),)
        self.logits_processor = self._logits_processor(vocab)
        self.decoder = IncrementalDecoder(self.lm.base_model)
        trainable = [p for p in self.parameters() if p.requires_grad]
        options = dict(self.optimizer_kwargs)
        if self.optimizer_class in (torch.optim.Adam, torch.optim.AdamW):
            # torch picks the per-tensor loop on the CPU: the same arithmetic, one Python
            # round of a dozen tensor ops per parameter; foreach runs each op over all of them
            options.setdefault("foreach", True)
        # SB3's optimizer classes (Adam by default) take lr; torch's Optimizer base does not
        self.optimizer = self.optimizer_class(trainable, lr=lr_schedule(1), **options)  # type: ignore[call-arg]
        #: float16 updates scale their gradients (bfloat16 and float32 need not)
        self.gradient_scaler = (
            GradientScaler(trainable, self.optimizer)
            if self.compute_dtype == torch.float16
            else None
        )

    def _reward_model_critic(self, highest_id: int) -> nn.Module:
        from llm_gym.agents.reward_model_critic import RewardModelCritic

        critic = RewardModelCritic(str(self.critic_model), trust_remote_code=self.trust_remote_code)
        if highest_id >= critic.vocab_size:
            raise ValueError(
                f"observation input_ids go up to {highest_id} but the critic's reward model "
                f"{self.critic_model!r} reads {critic.vocab_size} token ids; critic "
                "'reward-model' needs a reward model on the environment's tokenizer"
            )
        return critic

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            model=self.model_name,
            critic=self.critic,
            critic_hidden=self.critic_hidden,
            critic_model=self.critic_model,
            temperature=self.temperature,
            top_k=self.top_k,
            n_tokens=self.n_tokens,
            dropout=self.dropout,
            trust_remote_code=self.trust_remote_code,
            dtype=self.compute_dtype,
            reference_device=self.reference_device,
            reference_dtype=self.reference_dtype,
        )
        return data

    def load_reference(self, name: str | None = None) -> PreTrainedModel:
        """A frozen copy of the reference LM (``name``, default the policy's own model).

        It runs on ``reference_device`` (default: the policy's device) with
        ``reference_dtype`` weights (default: as saved); gradients off, eval mode.
        """
        device = self.reference_device or self.device
        lm = load_causal_lm(
            name or self.model_name, self.trust_remote_code, self.reference_dtype, device
        )
        return lm.requires_grad_(False)

    def train(self, mode: bool = True) -> Self:
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
        """LM hidden state of the newest token of each observation window (batch, width).

        Float32; computed in ``dtype`` when one is set.
        """
        window = cast(dict[str, torch.Tensor], obs)  # token environments observe a Dict
        ids, mask = token_ids(window["input_ids"]), token_ids(window["attention_mask"])
        with self._autocast():
            if not self.training and not torch.is_grad_enabled():
                hidden = self.decoder(ids, mask)
            else:
                hidden = shared_prefix_hidden(self.lm.base_model, ids, mask)
        return hidden.float()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.compute_dtype is None:  # float32: no context at all
            return contextlib.nullcontext()
        return autocast(ids_device(self), self.compute_dtype)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits of the distribution sampled from (temperature, ``n_tokens`` and top-k applied)."""
        head = self._output_layer[0]
        # the processors used (temperature, suppressed ids, top-k) do not read input_ids
        return self.logits_processor(
            None,  # type: ignore[arg-type]
            float32_head(head, hidden, self.compute_dtype is not None),
        )

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

    def _values(self, hidden: torch.Tensor, obs: PyTorchObs) -> torch.Tensor:
        if self.critic == "reward-model":  # reads the window itself, not the LM's state
            window = cast(dict[str, torch.Tensor], obs)
            return self.value_net(
                token_ids(window["input_ids"]), token_ids(window["attention_mask"])
            )
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
        logits = self.logits(hidden)
        actions, log_prob, entropy = sample_categorical(logits, deterministic)
        #: per-token entropy of the last rollout step, for logging
        self.last_entropy = entropy.detach()
        #: the logits the last step sampled from (an agent's exact KL reads them)
        self.last_logits = logits.detach()
        return actions, self._values(hidden, obs), log_prob

    def evaluate_actions(
        self, obs: PyTorchObs, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.hidden_state(obs)
        distribution = self._distribution(hidden)
        outputs = self._values(hidden, obs), distribution.log_prob(actions), distribution.entropy()
        if self.gradient_scaler is not None:
            return self.gradient_scaler.scale_gradients(*outputs)  # type: ignore[return-value]
        return outputs

    def get_distribution(self, obs: PyTorchObs) -> CategoricalDistribution:
        return self._distribution(self.hidden_state(obs))

    def predict_values(self, obs: PyTorchObs) -> torch.Tensor:
        return self._values(self.hidden_state(obs), obs)


# ActorCriticPolicy declares action_dist as any Distribution; a token policy's is categorical
class CausalLMPolicy(CausalLMCore, ActorCriticPolicy):  # type: ignore[misc]
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
        critic: ``"detached"`` (default; an MLP on the stop-gradient hidden state),
            ``"shared"`` (a linear head whose gradients reach the LM trunk) or
            ``"reward-model"`` (a trainable copy of the decoder reward model
            ``critic_model``, reading the window: values start as its prefix scores,
            as TRL's and InstructGPT's critics do;
            :class:`~llm_gym.agents.reward_model_critic.RewardModelCritic`).
        critic_hidden: width of the detached critic's hidden layer.
        critic_model: the reward-model critic's hub id or folder.
        temperature: divides the logits before sampling (1.0: the LM's own).
        top_k: sample only among the k most likely tokens (``None``: all).
        n_tokens: sample only ids below this, the tokenizer's size, when the LM's
            output layer is padded past it (Qwen, Llama-style); ``None``: every id.
        dropout: keep the LM's dropout active in updates (rollouts never use it).
        trust_remote_code: passed to ``from_pretrained``; off by default.
        dtype: ``"bfloat16"`` / ``"float16"`` run the LM's forwards under autocast
            (weights, output layer, log-probs and critic stay float32; float16 updates
            scale their gradients); ``None`` or ``"float32"``: plain float32.
        reference_device: where the frozen reference LM runs (``None``: the policy's
            device), e.g. ``"cuda:1"``.
        reference_dtype: the reference LM's weight type (``None``: as saved).
        torch_dtype: the transformers 4 name of ``dtype``.
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


def sample_categorical(
    logits: torch.Tensor, deterministic: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Actions, their log-probs and the entropies of categorical distributions over ``logits``.

    The operations ``torch.distributions.Categorical`` runs for SB3's
    ``get_actions``, ``log_prob`` and ``entropy``, in the same order (the same
    numbers and the same draws from the random generator), without the
    distribution object's bookkeeping on every rollout step.

    Example:
        >>> actions, log_prob, entropy = sample_categorical(torch.tensor([[0.0, 20.0]]), True)
        >>> actions.tolist(), round(float(log_prob), 6), round(float(entropy), 6)
        ([1], 0.0, 0.0)
    """
    log_p = logits - logits.logsumexp(dim=-1, keepdim=True)
    probs = torch.softmax(log_p, dim=-1)
    if deterministic:
        actions = torch.argmax(probs, dim=1)
    else:
        actions = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, True).T
        actions = actions.reshape(probs.shape[:-1])
    log_prob = log_p.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    entropy = -(torch.clamp(log_p, min=torch.finfo(log_p.dtype).min) * probs).sum(-1)
    return actions, log_prob, entropy


def check_token_spaces(
    observation_space: spaces.Space[Any],
    action_space: spaces.Space[Any],
    user: str = "CausalLMPolicy",
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
