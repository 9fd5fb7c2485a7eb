"""Does a reward wrapper keep the optimal policy? Checked by solving both trees exactly.

Holds :func:`is_policy_invariant`, :func:`compare_solutions` and the
:class:`InvarianceReport` they return.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from llm_gym.theory.solver import Solution, solve
from llm_gym.theory.tree import enumerate_tree

__all__ = ["InvarianceReport", "StateChange", "compare_solutions", "is_policy_invariant"]


@dataclass(frozen=True)
class StateChange:
    """A state whose set of optimal actions the wrapper changed."""

    prefix: tuple[int, ...]
    base_actions: tuple[int, ...]
    wrapped_actions: tuple[int, ...]
    on_optimal_path: bool  # the prefix starts a sequence that is optimal for the base env


@dataclass
class InvarianceReport:
    """The base and wrapped solutions and what differs between them.

    Truthy when every state keeps its set of optimal actions. ``sequences_kept``:
    the optimal full sequences (maximisers of G_0) are the same.
    ``return_offset_spread``: spread over all sequences of
    G_0(wrapped) - G_0(base); 0 when every sequence's return moves by one constant.
    """

    base: Solution
    wrapped: Solution
    changes: list[StateChange] = field(default_factory=list)

    @property
    def invariant(self) -> bool:
        return not self.changes

    @property
    def sequences_kept(self) -> bool:
        return self.base.optimal_sequences() == self.wrapped.optimal_sequences()

    @property
    def return_offset_spread(self) -> float:
        return float(np.ptp(self.wrapped.returns[:, 0] - self.base.returns[:, 0]))

    @property
    def n_states(self) -> int:
        return sum(len(v) for v in self.base.v)

    def __bool__(self) -> bool:
        return self.invariant

    def summary(self, limit: int = 10) -> str:
        """A few lines: the verdict, then up to ``limit`` changed states."""
        on_path = sum(c.on_optimal_path for c in self.changes)
        lines = [
            f"gamma={self.base.gamma} view={self.wrapped.view}: "
            f"{'invariant' if self.invariant else 'NOT invariant'}; "
            f"{len(self.changes)}/{self.n_states} states change their optimal actions "
            f"({on_path} on an optimal path); optimal sequences "
            f"{'kept' if self.sequences_kept else 'changed'}; "
            f"return offset spread {self.return_offset_spread:.3g}"
        ]
        for change in self.changes[:limit]:
            lines.append(
                f"  state {list(change.prefix)}: {list(change.base_actions)} -> "
                f"{list(change.wrapped_actions)}"
            )
        if len(self.changes) > limit:
            lines.append(f"  ... and {len(self.changes) - limit} more")
        return "\n".join(lines)


def is_policy_invariant(
    env: gym.Env,
    wrapper: Callable[[gym.Env], gym.Env],
    gamma: float = 1.0,
    view: str = "token_rewards",
    prompt: object = None,
    atol: float = 1e-9,
) -> InvarianceReport:
    """Solve ``env`` (its step rewards) and ``wrapper(env)`` (``view``), compare optimal actions.

    Args:
        env: the base token environment; its own scalar rewards define the task.
        wrapper: builds the wrapped environment from ``env``, e.g. ``UniformCredit``
            or ``lambda e: PotentialShaping(e, phi, gamma=0.9)``.
        gamma: the discount of both problems.
        view: what the learner of the wrapped env optimises: ``"token_rewards"``
            (per-token credit) or ``"stream"`` (the scalar rewards step() returns;
            for redistribution wrappers that is the unchanged sparse stream).
        prompt: the prompt whose tree is solved (see :func:`enumerate_tree`).
        atol: tolerance for ties.

    Returns:
        an :class:`InvarianceReport`, truthy when the optimal actions of every
        state are unchanged.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> from llm_gym.wrappers import UniformCredit
        >>> env = gym.make("TokenTree-v0", n_tokens=2, horizon=3, reward=lambda ids: ids.sum())
        >>> bool(is_policy_invariant(env, UniformCredit, gamma=1.0))
        True
    """
    base = solve(enumerate_tree(env, prompt=prompt), gamma, "stream", atol=atol)
    wrapped = solve(enumerate_tree(wrapper(env), prompt=prompt), gamma, view, atol=atol)
    return compare_solutions(base, wrapped)


def compare_solutions(base: Solution, wrapped: Solution) -> InvarianceReport:
    """The report of :func:`is_policy_invariant` for two solutions of the same tree.

    Enumerating is the slow part (one reward-model call per sequence); enumerate
    each tree once and solve it for several discounts, then compare here.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> from llm_gym.theory import enumerate_tree, solve
        >>> tree = enumerate_tree(gym.make("TokenTree-v0", n_tokens=2, horizon=2,
        ...                                reward=lambda ids: float(ids[0])))
        >>> compare_solutions(solve(tree, 0.5), solve(tree, 1.0)).invariant
        True
    """
    if base.tree.actions.shape != wrapped.tree.actions.shape:
        raise ValueError(
            f"the trees differ: {base.tree.actions.shape} vs {wrapped.tree.actions.shape} "
            "(sequences, horizon); expected solutions of the same token tree"
        )
    optimal_prefixes = {
        seq[:t] for seq in base.optimal_sequences() for t in range(base.tree.horizon)
    }
    changes = []
    for t, q in enumerate(base.q):
        for index in range(len(q)):
            prefix = base.tree.prefix(t, index)
            before, after = base.optimal_actions(prefix), wrapped.optimal_actions(prefix)
            if before != after:
                changes.append(StateChange(prefix, before, after, prefix in optimal_prefixes))
    return InvarianceReport(base, wrapped, changes)
