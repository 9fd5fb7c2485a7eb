"""The methods of ``llm-gym compare``, each declared once.

Holds :class:`Method` (one reward scheme: the wrapper it puts on LLMCompletion-v0,
the credit map the fidelity table measures, what it needs, its help line),
:class:`MethodFamily` (methods named by a parameter, such as ``abc@<layers>``),
:class:`MethodRegistry` and :data:`registry`, the one instance that the CLI help,
the validation of method names, the environments and the fidelity table all read,
:data:`METHODS` (the names a preset runs by default), :func:`check_methods`,
:func:`abc_layers_of`, :func:`relevance_of` (the embedded world's sentiment oracle),
:func:`task_relevance` and :func:`task_contributions` (each task's oracle, unsigned and
signed).

A new method is one entry::

    registry.register(Method("uniform-centred", "llm_gym.wrappers:UniformCredit", ...))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import load_env_creator

from llm_gym import assets

if TYPE_CHECKING:
    from llm_gym.experiments.presets import ComparePreset

__all__ = [
    "METHODS",
    "SUITE_METHODS",
    "SUITE_TASKS",
    "Method",
    "MethodFamily",
    "MethodRegistry",
    "abc_layers_of",
    "check_methods",
    "registry",
    "relevance_of",
    "task_contributions",
    "task_relevance",
]

#: ``preset -> (label, credit map)``: the label names the map, so methods that share a
#: map (``abc`` and ``abc-centred``) share one row of the fidelity table
CreditMapOf = Callable[["ComparePreset"], tuple[str, Any]]


def _no_kwargs(preset: ComparePreset) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Method:
    """One reward scheme of ``llm-gym compare``.

    Args:
        name: what ``--rewards`` calls it (no ``@``: that names a :class:`MethodFamily`).
        wrapper: the wrapper class or function, ``wrapper(env, **kwargs)``, or its entry
            point ``"module:name"`` (imported when first used, so the CLI stays quick).
        kwargs: ``preset -> keyword arguments of the wrapper``; default none.
        vector_wrapper: the same scheme for a vector env (``llm_gym.wrappers.vector``),
            which the group agents (``--agent rloo|grpo``) train on; ``None``: the method
            runs with ``--agent ppo`` only.
        agent_kwargs: options of the group agents this method sets (e.g. the
            group-centred estimator); default none.
        agents: the agents it runs with (``"ppo"``, ``"rloo"``, ``"grpo"``); default: the
            group agents only when it has a vector form.
        help: one line for ``llm-gym compare --help``.
        credit_map: ``preset -> (label, map)``, the map
            (:data:`~llm_gym.rewards.credit.CreditMap`) the fidelity table measures for
            this method; ``None``: no row (the method spreads no credit).
        needs_embedded_world: its wrapper reads the embedded world's known per-token
            relevance, so it runs only with the embedded tokenizer.
        by_default: among :data:`METHODS`, which a preset runs when none are named.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> from llm_gym.experiments.presets import ComparePreset
        >>> env = registry.lookup("uniform-centred").wrap(gym.make("LLMCompletion-v0"), ComparePreset())
        >>> type(env).__name__, env.baseline.running
        ('UniformCredit', True)
    """

    name: str
    wrapper: str | Callable[..., gym.Env]
    kwargs: Callable[[ComparePreset], dict[str, Any]] = _no_kwargs
    vector_wrapper: str | Callable[..., gym.vector.VectorEnv] | None = None
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    agents: tuple[str, ...] | None = None
    help: str = ""
    credit_map: CreditMapOf | None = None
    needs_embedded_world: bool = False
    by_default: bool = True

    def runs_with(self, agent: str) -> bool:
        """Whether this method can train with ``agent``."""
        if self.agents is not None:
            return agent in self.agents
        return agent == "ppo" or self.vector_wrapper is not None

    def wrap(self, env: gym.Env, preset: ComparePreset) -> gym.Env:
        """``env`` wrapped for this method under ``preset``'s settings."""
        # an entry point names a wrapper, which gymnasium types as an env creator
        wrapper = (
            cast(Callable[..., gym.Env], load_env_creator(self.wrapper))
            if isinstance(self.wrapper, str)
            else self.wrapper
        )
        return wrapper(env, **self.kwargs(preset))

    def wrap_vector(
        self, envs: gym.vector.VectorEnv, preset: ComparePreset
    ) -> gym.vector.VectorEnv:
        """A vector env wrapped for this method (for the group agents)."""
        if self.vector_wrapper is None:
            raise ValueError(
                f"method {self.name!r} has no vector form, so the group agents cannot train "
                "with it; use --agent ppo"
            )
        wrapper = self.vector_wrapper
        if isinstance(wrapper, str):
            wrapper = cast(Callable[..., gym.vector.VectorEnv], load_env_creator(wrapper))
        return wrapper(envs, **self.kwargs(preset))


@dataclass(frozen=True)
class MethodFamily:
    """Methods named ``<prefix>@<parameter>`` (``abc@0``, ``abc@0,1``), built from the name.

    Args:
        prefix: the name before ``@``.
        parameter: what follows ``@``, as the help shows it (``"layers"``).
        make: ``name -> Method`` for a full name such as ``"abc@0,1"``; raises a
            ValueError naming a parameter it cannot read.
        help: one line for ``llm-gym compare --help``.
    """

    prefix: str
    parameter: str
    make: Callable[[str], Method]
    help: str = ""

    @property
    def pattern(self) -> str:
        """How the help writes the family, e.g. ``abc@<layers>``."""
        return f"{self.prefix}@<{self.parameter}>"


class MethodRegistry:
    """Every method ``llm-gym compare`` knows, by name, in the order registered.

    Example:
        >>> names = MethodRegistry()
        >>> names.register(Method("sparse", "llm_gym.wrappers:SparseReward", help="R at the end"))
        >>> names.lookup("sparse").help
        'R at the end'
        >>> names.lookup("dense")
        Traceback (most recent call last):
        ...
        ValueError: unknown method 'dense'; expected one of ['sparse']
    """

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}
        self._families: dict[str, MethodFamily] = {}

    def register(self, entry: Method | MethodFamily) -> None:
        """Add a method or a family; a name already taken is a ValueError."""
        if isinstance(entry, MethodFamily):
            if entry.prefix in self._families:
                raise ValueError(f"method family {entry.pattern!r} is already registered")
            self._families[entry.prefix] = entry
            return
        if "@" in entry.name:
            raise ValueError(
                f"method name {entry.name!r} has an '@', which names a family member; "
                "register a MethodFamily for it"
            )
        if entry.name in self._methods:
            raise ValueError(f"method {entry.name!r} is already registered")
        self._methods[entry.name] = entry

    def unregister(self, name: str) -> None:
        """Remove the method ``name``, or the family whose prefix or pattern is ``name``."""
        family = name.partition("@")[0]
        if name in self._methods:
            del self._methods[name]
        elif family in self._families and name in (family, self._families[family].pattern):
            del self._families[family]
        else:
            raise ValueError(f"no method {name!r} to unregister; registered: {self.names()}")

    def names(self) -> list[str]:
        """The methods' names, then the families' patterns (``abc@<layers>``)."""
        return [*self._methods, *(family.pattern for family in self._families.values())]

    def default_names(self) -> tuple[str, ...]:
        """The names of the methods a preset runs when none are named."""
        return tuple(name for name, method in self._methods.items() if method.by_default)

    def help_lines(self) -> list[tuple[str, str]]:
        """``(name or pattern, help)`` per method, then per family."""
        return [(m.name, m.help) for m in self._methods.values()] + [
            (f.pattern, f.help) for f in self._families.values()
        ]

    def lookup(self, name: str) -> Method:
        """The method called ``name``: a registered one, or a member of a family."""
        if name in self._methods:
            return self._methods[name]
        prefix, at, parameter = name.partition("@")
        if not at or prefix not in self._families:
            raise ValueError(f"unknown method {name!r}; expected one of {self.names()}")
        family = self._families[prefix]
        if not parameter:
            raise ValueError(f"method {name!r}: expected {family.pattern}")
        return family.make(name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        prefix, at, _ = name.partition("@")
        return name in self._methods or bool(at and prefix in self._families)

    def __iter__(self) -> Iterator[Method]:
        return iter(self._methods.values())

    def check(
        self, names: Sequence[str], preset: ComparePreset | None = None, agent: str | None = None
    ) -> None:
        """Raise a ValueError naming any method that is unknown or that ``preset`` cannot run."""
        unknown = [name for name in names if name not in self]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; expected one of {self.names()}")
        methods = [self.lookup(name) for name in names]  # reads each family parameter
        agent = agent or (preset.agent if preset is not None else None)
        if agent is not None:
            refused = [m.name for m in methods if not m.runs_with(agent)]
            if refused:
                raise ValueError(f"methods {refused} do not run with --agent {agent}")
        if preset is None or preset.embedded_world:
            return
        for method in methods:
            if method.needs_embedded_world:
                raise ValueError(
                    f"method {method.name!r} needs the embedded tokenizer (its credit is the "
                    f"known lexicon valence of each embedded token), but the tokenizer is "
                    f"{preset.tokenizer!r}; drop {method.name!r} from the methods"
                )


def abc_layers_of(method: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """The layers an ``abc`` / ``abc@L`` method reads.

    Example:
        >>> abc_layers_of("abc@0,1", (-1,)), abc_layers_of("abc", (-1,))
        ((0, 1), (-1,))
    """
    _, _, layers = method.partition("@")
    if not layers:
        return default
    try:
        return tuple(int(v) for v in layers.split(","))
    except ValueError as err:
        raise ValueError(
            f"method {method!r}: expected abc@<layer>[,<layer>...], e.g. abc@0"
        ) from err


def relevance_of(prompt_ids: np.ndarray, completion_ids: np.ndarray) -> np.ndarray:
    """The embedded world's sentiment oracle: each completion token's ``|lexicon valence|``."""
    return assets.token_relevance(completion_ids)


Relevance = Callable[[np.ndarray, np.ndarray], np.ndarray]


def task_relevance(task: str) -> Relevance:
    """The oracle credit map of a task: ``(prompt_ids, completion_ids) -> relevance``.

    The sentiment tasks' is :func:`relevance_of`; a credit-benchmark task's is the
    magnitude of its rule's per-token terms (:mod:`llm_gym.assets.rules`).

    Example:
        >>> task_relevance("paper") is relevance_of
        True
        >>> the_story, begins_when_a_chef = np.array([5, 12]), np.array([25, 26, 3, 77])
        >>> task_relevance("decisive")(the_story, begins_when_a_chef).tolist()
        [0.0, 0.0, 0.0, 2.0]
    """
    from llm_gym.assets.rules import RULES

    return RULES[task].relevance if task in RULES else relevance_of


def task_contributions(task: str) -> Callable[[Any], list[np.ndarray]]:
    """The signed oracle of a task: a batch of completions -> each token's signed term."""
    from llm_gym.assets.rules import RULES

    if task in RULES:
        return RULES[task].contributions
    from llm_gym.assets.contributions import world_contributions

    return world_contributions


def _oracle_credit(preset: ComparePreset) -> tuple[str, Any]:
    relevance = task_relevance(preset.task)

    def weights(batch: Any) -> list[np.ndarray]:
        maps = [relevance(p, c) for p, c in zip(batch.prompt_ids, batch.completion_ids)]
        return [r / max(r.sum(), 1e-12) for r in maps]

    return "oracle", weights


def _uniform_credit(preset: ComparePreset) -> tuple[str, Any]:
    return "uniform", "uniform"


def _attention_credit(layers: tuple[int, ...]) -> tuple[str, Any]:
    from llm_gym.rewards import AttentionRequest

    return f"abc (layers {layers})", AttentionRequest(layers)


def _generator(preset: ComparePreset) -> str:
    """The causal LM whose attention ABC-D reads: the policy's starting weights."""
    return preset.policy_path or str(assets.LM_DIR)


def _generator_credit(preset: ComparePreset) -> tuple[str, Any]:
    from llm_gym.rewards.generator import GeneratorAttention

    return "abcd (generator attention)", GeneratorAttention(_generator(preset), device="cpu")


def _abc_member(name: str) -> Method:
    layers = abc_layers_of(name, ())
    return Method(
        name,
        "llm_gym.wrappers:AttentionCredit",
        lambda preset: {"beta": preset.beta, "layers": layers},
        vector_wrapper="llm_gym.wrappers.vector:AttentionCredit",
        help=f"ABC reading the RM's layers {layers}",
        credit_map=lambda preset: _attention_credit(layers),
        by_default=False,
    )


def _abc_centred_member(name: str) -> Method:
    layers = abc_layers_of(name, ())
    return Method(
        name,
        "llm_gym.wrappers:AttentionCredit",
        lambda preset: {"beta": preset.beta, "layers": layers, "baseline": _CENTRED},
        vector_wrapper="llm_gym.wrappers.vector:AttentionCredit",
        help=f"centred ABC reading the RM's layers {layers}",
        credit_map=lambda preset: _attention_credit(layers),
        by_default=False,
    )


def _magnitudes(signed: Callable[[Any], list[np.ndarray]]) -> Callable[[Any], list[np.ndarray]]:
    """A signed decomposition as the fidelity table's map: |c| normalised (last token if all 0)."""

    def weights(batch: Any) -> list[np.ndarray]:
        out = []
        for c in signed(batch):
            magnitude = np.abs(np.asarray(c, dtype=np.float64))
            if magnitude.sum() == 0:
                magnitude[-1] = 1.0
            out.append(magnitude / magnitude.sum())
        return out

    return weights


def _signed_oracle_credit(preset: ComparePreset) -> tuple[str, Any]:
    return "oracle-signed (rule-term magnitudes)", _magnitudes(task_contributions(preset.task))


def _leave_one_out_credit(preset: ComparePreset) -> tuple[str, Any]:
    from llm_gym.experiments.presets import env_options
    from llm_gym.rewards.leave_one_out import LeaveOneOut

    env = gym.make("LLMCompletion-v0", **env_options(preset))
    reward_model = cast(Any, env.unwrapped).task.reward_model  # LLMCompletionEnv's task
    env.close()
    return "loo (leave-one-out magnitudes)", _magnitudes(LeaveOneOut(reward_model))


_CENTRED = "running_mean"  # only the score's deviation from its running mean is spread

#: the one registry of compare methods
registry = MethodRegistry()
registry.register(
    Method(
        "oracle",
        "llm_gym.wrappers:RelevanceCredit",
        lambda p: {"relevance": task_relevance(p.task), "beta": p.beta},
        vector_wrapper="llm_gym.wrappers.vector:RelevanceCredit",
        help="RelevanceCredit with the task's known per-token relevance (|lexicon valence|, "
        "or |rule term| on a credit-benchmark task; embedded tokenizer only)",
        credit_map=_oracle_credit,
        needs_embedded_world=True,
    )
)
registry.register(
    Method(
        "sparse",
        "llm_gym.wrappers:SparseReward",
        vector_wrapper="llm_gym.wrappers.vector:SparseReward",
        help="SparseReward: the RM score on the last token (the baseline, always run)",
    )
)
registry.register(
    Method(
        "abc",
        "llm_gym.wrappers:AttentionCredit",
        lambda p: {"beta": p.beta, "layers": p.abc_layers},
        vector_wrapper="llm_gym.wrappers.vector:AttentionCredit",
        help="AttentionCredit, the paper's form: the score spread by the RM's attention "
        "(layers: --abc-layers)",
        credit_map=lambda p: _attention_credit(p.abc_layers),
    )
)
registry.register(
    Method(
        "uniform",
        "llm_gym.wrappers:UniformCredit",
        vector_wrapper="llm_gym.wrappers.vector:UniformCredit",
        help="UniformCredit: the score spread evenly over the completion",
        credit_map=_uniform_credit,
    )
)
registry.register(
    Method(
        "abcd",
        "llm_gym.wrappers:GeneratorAttentionCredit",
        lambda p: {"model": _generator(p), "beta": p.beta},
        help="GeneratorAttentionCredit: the score spread by the starting LM's attention",
        credit_map=_generator_credit,
    )
)
registry.register(
    Method(
        "pbrs",
        "llm_gym.wrappers:PotentialShaping",
        lambda p: {"potential": "reward_model"},
        vector_wrapper="llm_gym.wrappers.vector:PotentialShaping",
        help="PotentialShaping with the RM's score of each prefix as the potential",
    )
)
registry.register(
    Method(
        "abc-centred",
        "llm_gym.wrappers:AttentionCredit",
        lambda p: {"beta": p.beta, "layers": p.abc_layers, "baseline": _CENTRED},
        vector_wrapper="llm_gym.wrappers.vector:AttentionCredit",
        help="abc spreading only the score's deviation from its running mean",
        credit_map=lambda p: _attention_credit(p.abc_layers),
    )
)
registry.register(
    Method(
        "oracle-centred",
        "llm_gym.wrappers:RelevanceCredit",
        lambda p: {"relevance": task_relevance(p.task), "beta": p.beta, "baseline": _CENTRED},
        vector_wrapper="llm_gym.wrappers.vector:RelevanceCredit",
        help="oracle spreading only the score's deviation from its running mean",
        credit_map=_oracle_credit,
        needs_embedded_world=True,
        by_default=False,
    )
)
registry.register(
    Method(
        "uniform-centred",
        "llm_gym.wrappers:UniformCredit",
        lambda p: {"baseline": _CENTRED},
        vector_wrapper="llm_gym.wrappers.vector:UniformCredit",
        help="uniform spreading only the score's deviation from its running mean",
        credit_map=_uniform_credit,
        by_default=False,
    )
)
registry.register(
    Method(
        "abcd-centred",
        "llm_gym.wrappers:GeneratorAttentionCredit",
        lambda p: {"model": _generator(p), "beta": p.beta, "baseline": _CENTRED},
        help="abcd spreading only the score's deviation from its running mean",
        credit_map=_generator_credit,
        by_default=False,
    )
)
registry.register(
    Method(
        "oracle-signed",
        "llm_gym.wrappers.signed_credit:SignedCredit",
        lambda p: {"contributions": task_contributions(p.task), "beta": p.beta},
        help="SignedCredit with each token's own signed term of the score under the task's "
        "rule (VADER after negation, intensifiers and 'but', or a credit-benchmark task's "
        "rule), the residual on the last token (embedded tokenizer only)",
        credit_map=_signed_oracle_credit,
        needs_embedded_world=True,
        by_default=False,
    )
)
registry.register(
    Method(
        "loo",
        "llm_gym.wrappers.signed_credit:LeaveOneOutCredit",
        lambda p: {"beta": p.beta},
        help="LeaveOneOutCredit: each token's effect on the RM's score when it is deleted "
        "(T extra RM rows per episode), the residual on the last token",
        credit_map=_leave_one_out_credit,
        by_default=False,
    )
)
registry.register(
    Method(
        "abc-group",
        "llm_gym.wrappers:AttentionCredit",
        lambda p: {"beta": p.beta, "layers": p.abc_layers},
        vector_wrapper="llm_gym.wrappers.vector:AttentionCredit",
        agent_kwargs={"estimator": "group_centred"},
        agents=("rloo", "grpo"),
        help="group-centred ABC (group agents only): the group deviation of the score "
        "spread by the RM's attention",
        credit_map=lambda p: _attention_credit(p.abc_layers),
        by_default=False,
    )
)
registry.register(
    MethodFamily(
        "abc",
        "layers",
        _abc_member,
        help="abc reading these RM layers instead of --abc-layers, e.g. abc@0 or abc@0,1",
    )
)
registry.register(
    MethodFamily(
        "abc-centred",
        "layers",
        _abc_centred_member,
        help="abc-centred reading these RM layers instead of --abc-layers, e.g. abc-centred@0",
    )
)

#: the methods a preset runs when none are named
METHODS: tuple[str, ...] = registry.default_names()

#: the tasks ``llm-gym compare --suite`` runs: one per credit structure (llm_gym.assets.rules),
#: and sentiment at the paper's longest 140-160 tokens
SUITE_TASKS = ("default", "decisive", "diffuse", "interaction", "long")
#: the methods ``--suite`` runs when ``--rewards`` names none
SUITE_METHODS = (
    "sparse",
    "oracle-centred",
    "oracle-signed",
    "abc",
    "abc-centred",
    "uniform-centred",
    "pbrs",
)


def check_methods(
    methods: Sequence[str], preset: ComparePreset | None = None, agent: str | None = None
) -> None:
    """Raise a ValueError naming any method that is unknown or that ``preset`` cannot run.

    Example:
        >>> check_methods(["sparse", "abc@0"])
        >>> check_methods(["sparse", "dense"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown methods ['dense']; expected one of [...]
    """
    registry.check(methods, preset, agent)
