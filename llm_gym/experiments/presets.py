"""What one ``llm-gym compare`` asks for: the task, the methods and the PPO settings.

Holds :class:`ComparePreset`, the named presets :data:`PRESETS`, :func:`env_options`
(the LLMCompletion-v0 options a preset asks for) and :data:`RUN_INDEPENDENT_FIELDS`
(the settings that do not change what one run computes, so a results folder can
gain them and resume).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from llm_gym.agents.kl import KL_CONTROLLERS, check_kl_estimator
from llm_gym.agents.policy import CRITICS
from llm_gym.envs.task import TASK_PRESETS, check_int, check_new_tokens, task_policy_path
from llm_gym.experiments.methods import METHODS, check_methods, registry

__all__ = ["AGENTS", "PRESETS", "RUN_INDEPENDENT_FIELDS", "ComparePreset", "env_options"]

#: the agents a comparison can train: TokenPPO, TokenRLOO, TokenGRPO
AGENTS = ("ppo", "rloo", "grpo")


@dataclass(frozen=True)
class ComparePreset:
    """A comparison's task and PPO settings (override any field from the command line)."""

    task: str = "default"
    methods: tuple[str, ...] = METHODS
    seeds: int = 8
    updates: int = 150
    n_envs: int = 16  # episodes per update: the paper's batch of 16
    n_steps: int | None = None  # steps per env per update; None: the longest completion
    batch_size: int = 128
    n_epochs: int = 4
    learning_rate: float = 3e-5
    gae_lambda: float = 0.95
    # TokenPPO only: a method's own GAE lambda in place of gae_lambda (e.g. {"sparse": 1.0},
    # whose advantages then need no critic); empty: every method at gae_lambda, as before
    gae_lambda_by_method: dict[str, float] = field(default_factory=dict)
    beta: float = 0.8
    abc_layers: tuple[int, ...] = (-1,)
    kl_coef: float = 0.05
    kl_target: float | None = 6.0
    kl_horizon: int = 10_000  # timesteps over which the KL coefficient moves by its clipped error
    kl_coef_max: float = 1.0  # cap on the controlled KL coefficient
    # PPO only: a constrained update spending this fraction of the KL budget left
    # (TokenPPO's kl_step_fraction); None: unconstrained, as before it existed
    kl_step_fraction: float | None = None
    reward_model: str | None = None  # bundled name, hub id or folder; None: the task's own
    max_new_tokens: int | tuple[int, int] | None = None
    policy: str | None = None  # hub id or folder of a causal LM; None: the task's (embedded) LM
    tokenizer: str | None = None  # hub id or folder; None: the embedded tokenizer
    prompts: str | None = None  # bundled prompt set or file; None: the task's
    fidelity_completions: int = 256
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    agent: str = "ppo"  # "ppo" (TokenPPO), "rloo" (TokenRLOO) or "grpo" (TokenGRPO)
    group_size: int = 4  # completions per prompt of the group agents
    # "adaptive" (the results folders before it existed) or "pid" (holds kl_target)
    kl_controller: str = "adaptive"
    # "sampled" (the results folders before it existed) or "exact": what the controller reads
    kl_estimator: str = "sampled"
    # (kp, ki, kd) of the "pid" controller; None: its default gains (the folders before it)
    kl_pid_gains: tuple[float, float, float] | None = None
    # TokenPPO's value function: "detached" (the folders before it) or "shared"
    critic: str = "detached"

    def __post_init__(self) -> None:
        # every setting is checked here, so a bad one fails before anything is written
        if self.task not in TASK_PRESETS:
            raise ValueError(f"task must be one of {sorted(TASK_PRESETS)}, got {self.task!r}")
        if not self.methods:
            raise ValueError("methods is empty; expected at least one method name")
        if self.agent not in AGENTS:
            raise ValueError(f"agent must be one of {AGENTS}, got {self.agent!r}")
        check_int("group_size", self.group_size, 2)
        if self.kl_controller not in KL_CONTROLLERS:
            raise ValueError(
                f"kl_controller must be one of {KL_CONTROLLERS}, got {self.kl_controller!r}"
            )
        check_kl_estimator(self.kl_estimator)
        if self.kl_controller == "pid" and self.kl_target is None:
            raise ValueError("kl_controller 'pid' needs a kl_target; got kl_target=None")
        if self.kl_pid_gains is not None:
            gains = tuple(self.kl_pid_gains)
            if self.kl_controller != "pid":
                raise ValueError(
                    f"kl_pid_gains={gains!r} are the gains of kl_controller 'pid', got "
                    f"kl_controller={self.kl_controller!r}"
                )
            if len(gains) != 3 or not all(
                isinstance(g, (int, float)) and math.isfinite(g) and g >= 0 for g in gains
            ):
                raise ValueError(
                    f"kl_pid_gains must be three finite numbers >= 0 (kp, ki, kd), got {gains!r}"
                )
            object.__setattr__(self, "kl_pid_gains", tuple(float(g) for g in gains))
        if self.agent != "ppo" and self.n_envs % self.group_size:
            raise ValueError(
                f"n_envs={self.n_envs} (--batch) is not a multiple of group_size="
                f"{self.group_size}; the group agents need groups of equal size"
            )
        if self.agent != "ppo" and self.methods == METHODS:
            # the default methods that a group agent can train with (the rest have no vector form)
            object.__setattr__(
                self,
                "methods",
                tuple(m for m in METHODS if registry.lookup(m).runs_with(self.agent)),
            )
        check_methods(self.methods, agent=self.agent)
        if self.critic not in CRITICS:
            raise ValueError(f"critic must be one of {CRITICS}, got {self.critic!r}")
        if self.critic != "detached" and self.agent != "ppo":
            raise ValueError(
                f"critic={self.critic!r} is TokenPPO's value function; agent {self.agent!r} "
                "has no critic (leave critic 'detached')"
            )
        for name, low in (
            ("seeds", 1),
            ("updates", 1),
            ("n_envs", 1),
            ("batch_size", 2),
            ("n_epochs", 1),
            ("kl_horizon", 1),
            ("fidelity_completions", 1),
        ):
            check_int(name, getattr(self, name), low)
        if self.n_steps is not None:
            check_int("n_steps", self.n_steps, 1)
        for name, bottom, top in (("beta", 0.0, 1.0), ("gae_lambda", 0.0, 1.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not bottom <= value <= top:
                raise ValueError(f"{name} must be a number in [{bottom:g}, {top:g}], got {value!r}")
        self._check_gae_lambda_by_method()
        if not isinstance(self.learning_rate, (int, float)) or not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate!r}")
        if not isinstance(self.kl_coef, (int, float)) or self.kl_coef < 0:
            raise ValueError(f"kl_coef must be a number >= 0, got {self.kl_coef!r}")
        if not isinstance(self.kl_coef_max, (int, float)) or self.kl_coef_max <= 0:
            raise ValueError(f"kl_coef_max must be a number > 0, got {self.kl_coef_max!r}")
        if self.kl_step_fraction is not None:
            if not isinstance(self.kl_step_fraction, (int, float)) or self.kl_step_fraction <= 0:
                raise ValueError(
                    f"kl_step_fraction must be None or a number > 0, got {self.kl_step_fraction!r}"
                )
            if self.kl_target is None or self.agent != "ppo":
                raise ValueError(
                    f"kl_step_fraction={self.kl_step_fraction!r} needs agent 'ppo' and a "
                    f"kl_target; got agent={self.agent!r}, kl_target={self.kl_target!r}"
                )
        if self.kl_target is not None and (
            not isinstance(self.kl_target, (int, float)) or self.kl_target <= 0
        ):
            raise ValueError(f"kl_target must be None or a number > 0, got {self.kl_target!r}")
        if not self.abc_layers or not all(isinstance(v, int) for v in self.abc_layers):
            raise ValueError(
                f"abc_layers must be a tuple of layer indices, got {self.abc_layers!r}"
            )
        if self.max_new_tokens is not None:
            check_new_tokens(self.max_new_tokens)

    def _check_gae_lambda_by_method(self) -> None:
        by_method = self.gae_lambda_by_method
        if not isinstance(by_method, dict):
            raise ValueError(
                f"gae_lambda_by_method must be a dict of method name to lambda, got {by_method!r}"
            )
        if by_method and self.agent != "ppo":
            raise ValueError(
                f"gae_lambda_by_method={by_method!r} sets TokenPPO's GAE lambda; agent "
                f"{self.agent!r} has no critic to bootstrap from (leave it empty)"
            )
        unknown = sorted(m for m in by_method if m not in registry)
        if unknown:
            raise ValueError(
                f"gae_lambda_by_method names unknown methods {unknown}; expected names from "
                f"{sorted(registry.names())}"
            )
        for method, value in by_method.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0.0 <= value <= 1.0
            ):
                raise ValueError(
                    f"gae_lambda_by_method[{method!r}] must be a number in [0, 1], got {value!r}"
                )
        # stored sorted, as floats: the same map always gives the same config.json
        object.__setattr__(
            self, "gae_lambda_by_method", {m: float(by_method[m]) for m in sorted(by_method)}
        )

    def gae_lambda_of(self, method: str) -> float:
        """The GAE lambda a method's runs use: its own in ``gae_lambda_by_method``, else
        ``gae_lambda``.

        >>> preset = ComparePreset(gae_lambda_by_method={"sparse": 1.0})
        >>> preset.gae_lambda_of("sparse"), preset.gae_lambda_of("abc-centred")
        (1.0, 0.95)
        """
        return self.gae_lambda_by_method.get(method, self.gae_lambda)

    @property
    def reward_model_name(self) -> str:
        """The reward model the runs read: ``reward_model``, or else the task's own.

        >>> ComparePreset().reward_model_name, ComparePreset(task="decisive").reward_model_name
        ('default', 'decisive')
        """
        if self.reward_model is not None:
            return self.reward_model
        return str(TASK_PRESETS[self.task].get("reward_model", "default"))

    @property
    def policy_path(self) -> str | None:
        """The causal LM the runs train: ``policy``, else the task's bundled LM (``None``: the
        embedded 128-position LM, the policy's own default).

        >>> ComparePreset().policy_path is None, ComparePreset(task="long").policy_path.endswith("lm_long")
        (True, True)
        """
        return self.policy if self.policy is not None else task_policy_path(self.task)

    @property
    def embedded_world(self) -> bool:
        """Whether completions are in the embedded tokenizer, whose per-token relevance is known."""
        return self.tokenizer is None


#: the named presets of ``llm-gym compare --preset``
PRESETS: dict[str, ComparePreset] = {
    # the embedded world's credit-limited task: 64-token completions, rare decisive words
    "default": ComparePreset(),
    # the ABC paper's IMDb setting: 2-8-token prompts, 8-16 new tokens, batch 16, beta 0.8
    "paper": ComparePreset(task="paper"),
    # at most ~10 minutes on 2 CPU cores (two runs at a time), still showing the comparison
    "quick": ComparePreset(methods=("oracle", "sparse", "abc", "abc-centred"), seeds=3, updates=30),
}

#: preset fields that do not change what one (method, seed) run computes
RUN_INDEPENDENT_FIELDS = ("methods", "seeds", "fidelity_completions")


def env_options(preset: ComparePreset) -> dict[str, Any]:
    """The LLMCompletion-v0 options a preset asks for.

    Example:
        >>> env_options(ComparePreset(max_new_tokens=(40, 60)))
        {'task': 'default', 'reward_model': 'default', 'max_new_tokens': (40, 60), 'min_new_tokens': 40}
    """
    options: dict[str, Any] = {"task": preset.task, "reward_model": preset.reward_model_name}
    if preset.max_new_tokens is not None:
        # completions run their full sampled length, as in the presets
        options["max_new_tokens"] = preset.max_new_tokens
        low = (
            preset.max_new_tokens
            if isinstance(preset.max_new_tokens, int)
            else preset.max_new_tokens[0]
        )
        options["min_new_tokens"] = low
    if preset.tokenizer is not None:
        options["tokenizer"] = preset.tokenizer
    if preset.prompts is not None:
        options["prompts"] = preset.prompts
    if preset.policy is not None:
        from transformers import AutoConfig

        # policies whose output layer is padded past the tokenizer (Qwen, Llama-style)
        config = AutoConfig.from_pretrained(preset.policy)
        vocab = getattr(config, "vocab_size", None)
        if vocab is not None:
            options["vocab_size"] = vocab
    options.update(preset.env_kwargs)
    return options
