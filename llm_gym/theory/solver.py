"""Exact V*, Q*, optimal policies and policy values on an enumerated token tree.

Holds :class:`Solution` and :func:`solve`.

What Q and V mean here. The tree is deterministic: a state is the prompt plus a
prefix (a_1..a_t), an action appends a token. For every full sequence tau the
solver knows its per-step rewards r_1(tau)..r_H(tau) in the chosen view, and the
discounted return-to-go from depth t,

    G_t(tau) = sum_{k=t}^{H-1} gamma^(k-t) * r_{k+1}(tau)   (the rewards of the
    steps from state s_t on; the rewards of steps before t are not part of it).

Then Q*(s_t, a) = max over sequences tau through s_t + a of G_t(tau), V*(s_t) =
max_a Q*(s_t, a); for a policy pi, Q^pi and V^pi are the expectations of G_t
under pi's continuation. This is backward induction over the sequences' returns.
When r_k depends only on the prefix up to step k (the sparse env, any
PotentialShaping stream), it is the ordinary Bellman solution,
Q*(s, a) = r(s, a) + gamma * V*(s + a).

When the rewards are trajectory-dependent (the token_rewards of ABC, uniform,
ABC-D: r_k(tau) depends on tokens after k, and is known only at the episode's
end), two things differ and the solver reports both rather than choosing:

- the credit a past token receives depends on the continuation, so G_t leaves out
  a continuation-dependent amount. The policy that is greedy in Q* at every state
  (:meth:`Solution.optimal_actions`) maximises the return still to come from each
  state, as a learner regressing returns-to-go would; it need not follow the
  sequences that maximise the whole return G_0;
- :meth:`Solution.optimal_sequences` are the maximisers of G_0(tau), the
  objective from the start state. For prefix-determined rewards the greedy
  policy generates exactly these sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from llm_gym.theory.tree import TokenTree, enumerate_tree

__all__ = ["Policy", "Solution", "solve"]

#: a policy: per depth t an (n_actions**t, n_actions) array of action probabilities,
#: or a function prefix -> probabilities
Policy = Sequence[np.ndarray] | Callable[[tuple[int, ...]], Sequence[float]]


@dataclass
class Solution:
    """The exact solution of one token tree under one reward view and discount.

    ``q[t]`` is (n_actions**t, n_actions): Q* of each state of depth t (rows in
    the order of :meth:`TokenTree.index`); ``v[t]`` is (n_actions**t,).
    ``returns[:, t]`` is G_t of every full sequence.
    """

    tree: TokenTree
    gamma: float
    view: str
    atol: float
    returns: np.ndarray
    q: list[np.ndarray] = field(repr=False)
    v: list[np.ndarray] = field(repr=False)

    @property
    def value(self) -> float:
        """V* of the start state."""
        return float(self.v[0][0])

    def q_values(self, prefix: Sequence[int] = ()) -> np.ndarray:
        return self.q[len(prefix)][self.tree.index(tuple(prefix))]

    def optimal_actions(self, prefix: Sequence[int] = ()) -> tuple[int, ...]:
        """The actions within ``atol`` of the best Q* at the state ``prefix`` (ties kept)."""
        q = self.q_values(prefix)
        return tuple(int(a) for a in np.flatnonzero(q >= q.max() - self.atol))

    def optimal_sequences(self) -> list[tuple[int, ...]]:
        """The full sequences whose whole discounted return G_0 is within ``atol`` of the best."""
        g0 = self.returns[:, 0]
        rows = np.flatnonzero(g0 >= g0.max() - self.atol)
        return [tuple(int(a) for a in self.tree.actions[i]) for i in rows]

    def greedy_policy(self) -> list[np.ndarray]:
        """Uniform over the tied optimal actions of every state, as a per-depth table."""
        policy = []
        for q in self.q:
            best = q >= q.max(axis=1, keepdims=True) - self.atol
            policy.append(best / best.sum(axis=1, keepdims=True))
        return policy

    def evaluate(self, policy: Policy) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(V^pi, Q^pi) per depth, with the same layout as :attr:`v` and :attr:`q`.

        Example:
            >>> import gymnasium as gym, llm_gym
            >>> env = gym.make("TokenTree-v0", n_tokens=2, horizon=2, reward=lambda ids: ids.sum())
            >>> solution = solve(env)
            >>> v, q = solution.evaluate(lambda prefix: [0.5, 0.5])
            >>> float(v[0][0]), solution.value
            (1.0, 2.0)
        """
        table = self._policy_table(policy)
        n, horizon = self.tree.n_actions, self.tree.horizon
        rows = np.arange(len(self.returns))
        # continuation[:, t] = probability that pi takes the sequence's actions t..H-1
        continuation = np.ones((len(rows), horizon + 1))
        for t in range(horizon - 1, -1, -1):
            state = rows // n ** (horizon - t)
            taken = table[t][state, self.tree.actions[:, t]]
            continuation[:, t] = taken * continuation[:, t + 1]
        v, q = [], []
        for t in range(horizon):
            weighted = continuation[:, t + 1] * self.returns[:, t]
            q_t = weighted.reshape(n**t, n, -1).sum(axis=2)
            q.append(q_t)
            v.append((table[t] * q_t).sum(axis=1))
        return v, q

    def visit_probabilities(self, policy: Policy) -> list[np.ndarray]:
        """Probability that ``policy`` reaches each state, per depth: ``d[t]`` is (n_actions**t,)."""
        table = self._policy_table(policy)
        reach = [np.ones(1)]
        for t in range(self.tree.horizon - 1):
            reach.append((reach[t][:, None] * table[t]).reshape(-1))
        return reach

    def policy_gradient(self, policy: Policy) -> list[np.ndarray]:
        """The expected policy-gradient update of a tabular softmax ``policy`` in this view.

        ``g[t][s, a] = d(s) * pi(a | s) * (Q^pi(s, a) - V^pi(s))``: the expectation of
        REINFORCE with returns-to-go, ``sum_t grad log pi(a_t | s_t) * G_t``, taken with
        respect to the logits of every state (no ``gamma**t`` factor, as learners use it).
        In the stream view at gamma = 1 it is the gradient of the expected return; in the
        token_rewards view of a redistribution wrapper it is what a learner that credits
        each token with the rewards at and after it follows, which can differ even though
        every completion's return is the same.

        Example:
            >>> import gymnasium as gym, llm_gym
            >>> env = gym.make("TokenTree-v0", n_tokens=2, horizon=2, reward=lambda ids: ids[0])
            >>> grad = solve(env).policy_gradient(lambda prefix: [0.5, 0.5])
            >>> grad[0].tolist(), grad[1].tolist()
            ([[-0.25, 0.25]], [[0.0, 0.0], [0.0, 0.0]])
        """
        table = self._policy_table(policy)
        v, q = self.evaluate(table)
        reach = self.visit_probabilities(table)
        return [reach[t][:, None] * table[t] * (q[t] - v[t][:, None]) for t in range(len(q))]

    def expected_update(self, policy: Policy, advantages: np.ndarray) -> list[np.ndarray]:
        """``E[sum_t grad log pi(a_t | s_t) * A(tau, t)]`` for per-(sequence, step) advantages.

        ``advantages`` is ``(N, horizon)``, row i for sequence i of the tree; the
        gradient is taken with respect to the logits of every state, as in
        :meth:`policy_gradient`, which is this update with ``A = G_t``.

        Example:
            >>> import gymnasium as gym, llm_gym
            >>> env = gym.make("TokenTree-v0", n_tokens=2, horizon=2, reward=lambda ids: ids[0])
            >>> solution = solve(env)
            >>> uniform = lambda prefix: [0.5, 0.5]
            >>> update = solution.expected_update(uniform, solution.returns[:, :2])
            >>> all(np.allclose(u, g) for u, g in zip(update, solution.policy_gradient(uniform)))
            True
        """
        table = self._policy_table(policy)
        n, horizon = self.tree.n_actions, self.tree.horizon
        advantages = np.asarray(advantages, dtype=np.float64)
        if advantages.shape != self.tree.actions.shape:
            raise ValueError(
                f"advantages must have shape {self.tree.actions.shape} (sequences, horizon), "
                f"got {advantages.shape}"
            )
        rows = np.arange(len(self.tree.actions))
        probability = np.ones(len(rows))
        for t in range(horizon):
            probability *= table[t][rows // n ** (horizon - t), self.tree.actions[:, t]]
        update = []
        for t in range(horizon):
            state = rows // n ** (horizon - t)
            weight = probability * advantages[:, t]
            taken = np.zeros((n**t, n))
            np.add.at(taken, (state, self.tree.actions[:, t]), weight)
            total = np.bincount(state, weights=weight, minlength=n**t)
            update.append(taken - total[:, None] * table[t])
        return update

    def sequence_probabilities(self, policy: Policy) -> np.ndarray:
        """The probability of every full sequence under ``policy``, ``(N,)``."""
        reach = self.visit_probabilities(policy)
        return (reach[-1][:, None] * self._policy_table(policy)[-1]).reshape(-1)

    def group_centred_update(self, policy: Policy) -> list[np.ndarray]:
        """The expected update of the group-centred estimator (``TokenRLOO(estimator="group_centred")``).

        Each completion's score deviation from the other completions of its prompt,
        ``R - mean_{j != i} R_j``, is spread by its credit map m; token t's advantage
        is ``(R - mean) * sum_{u >= t} m_u``. The other completions are independent of
        this one, so in expectation their mean is ``E_pi[R]``: the update is
        :meth:`expected_update` with ``A(tau, t) = (R(tau) - E_pi[R]) * M_t(tau)``. It
        needs the tree's credit maps (a redistribution wrapper's ``info["credit_map"]``);
        without a wrapper the map is sparse and this is the true gradient.
        """
        returns = self.returns[:, 0] if self.gamma == 1.0 else self.tree.rewards(self.view).sum(1)
        if self.tree.credit_maps is None:
            maps = np.zeros_like(self.tree.stream)
            maps[:, -1] = 1.0
        else:
            maps = self.tree.credit_maps
        mean = float(self.sequence_probabilities(policy) @ returns)
        to_go = np.cumsum(maps[:, ::-1], axis=1)[:, ::-1]
        return self.expected_update(policy, (returns - mean)[:, None] * to_go)

    def policy_value(self, policy: Policy) -> float:
        """V^pi of the start state."""
        return float(self.evaluate(policy)[0][0][0])

    def _policy_table(self, policy: Policy) -> list[np.ndarray]:
        n, horizon = self.tree.n_actions, self.tree.horizon
        if callable(policy):
            table = [
                np.array([policy(self.tree.prefix(t, i)) for i in range(n**t)], dtype=np.float64)
                for t in range(horizon)
            ]
        else:
            table = [np.asarray(p, dtype=np.float64) for p in policy]
        for t, p in enumerate(table):
            if p.shape != (n**t, n) or not np.allclose(p.sum(axis=1), 1.0) or (p < 0).any():
                raise ValueError(
                    f"the policy at depth {t} has shape {p.shape} (or rows that are not "
                    f"probabilities); expected ({n**t}, {n}) rows of non-negative numbers "
                    "summing to 1"
                )
        if len(table) != horizon:
            raise ValueError(f"the policy has {len(table)} depths; expected {horizon}")
        return table


def solve(
    env: gym.Env | TokenTree,
    gamma: float = 1.0,
    view: str = "stream",
    prompt: object = None,
    atol: float = 1e-9,
) -> Solution:
    """Solve a token tree exactly: V*, Q*, tied optimal actions, policy values.

    Args:
        env: a (wrapped) token environment with Discrete actions and a fixed
            horizon, or a :class:`TokenTree` already enumerated from one.
        gamma: discount in [0, 1].
        view: ``"stream"`` (the rewards step() returns) or ``"token_rewards"``
            (the last step's ``info["token_rewards"]``).
        prompt: the prompt to solve for (see :func:`enumerate_tree`).
        atol: actions and sequences within ``atol`` of the best count as optimal.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> env = gym.make("TokenTree-v0", n_tokens=3, horizon=2,
        ...                reward=lambda ids: float(ids[0] == 2) + float(ids[1] == 1))
        >>> solution = solve(env)
        >>> solution.value, solution.optimal_actions(), solution.optimal_sequences()
        (2.0, (2,), [(2, 1)])
    """
    if not 0.0 <= float(gamma) <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    tree = env if isinstance(env, TokenTree) else enumerate_tree(env, prompt=prompt)
    rewards = tree.rewards(view)
    n, horizon = tree.n_actions, tree.horizon
    returns = np.zeros((len(rewards), horizon + 1))
    for t in range(horizon - 1, -1, -1):
        returns[:, t] = rewards[:, t] + gamma * returns[:, t + 1]
    q = [returns[:, t].reshape(n**t, n, -1).max(axis=2) for t in range(horizon)]
    v = [q_t.max(axis=1) for q_t in q]
    return Solution(tree, float(gamma), view, float(atol), returns, q, v)
