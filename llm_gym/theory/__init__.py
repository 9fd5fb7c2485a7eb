"""Exact solvers and invariance checks for small token MDPs.

:func:`enumerate_tree` replays every full sequence of a (wrapped) token
environment; :func:`solve` gives V*, Q*, the tied optimal actions and the value of
any policy, for either reward view (the scalar stream, or ``info["token_rewards"]``)
and any discount; :func:`is_policy_invariant` says whether a reward wrapper keeps
the optimal policy and which states and actions it changes. See
:mod:`llm_gym.theory.solver` for what Q and V mean when a wrapper's per-token
rewards depend on the whole completion.

Example:
    >>> import gymnasium as gym, llm_gym
    >>> from llm_gym.theory import is_policy_invariant
    >>> from llm_gym.wrappers import PotentialShaping
    >>> env = gym.make("TokenTree-v0", n_tokens=3, horizon=3, reward=lambda ids: float(ids[-1]))
    >>> report = is_policy_invariant(env, lambda e: PotentialShaping(e, lambda p, c: len(c)))
    >>> report.invariant, report.return_offset_spread
    (True, 0.0)
"""

from llm_gym.theory.invariance import (
    InvarianceReport,
    StateChange,
    compare_solutions,
    is_policy_invariant,
)
from llm_gym.theory.solver import Policy, Solution, solve
from llm_gym.theory.tree import MAX_SEQUENCES, TokenTree, enumerate_tree

__all__ = [
    "MAX_SEQUENCES",
    "InvarianceReport",
    "Policy",
    "Solution",
    "StateChange",
    "TokenTree",
    "compare_solutions",
    "enumerate_tree",
    "is_policy_invariant",
    "solve",
]
