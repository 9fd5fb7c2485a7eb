"""The exact token-tree solver and the shaping-invariance claims, checked by computation."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from llm_gym.envs import TokenTreeEnv
from llm_gym.envs.token_tree_models import tiny_causal_lm
from llm_gym.rewards.base import RewardModel
from llm_gym.theory import (
    compare_solutions,
    enumerate_tree,
    is_policy_invariant,
    solve,
)
from llm_gym.wrappers import (
    AttentionCredit,
    GeneratorAttentionCredit,
    PotentialShaping,
    UniformCredit,
)


def table_reward(n_tokens: int, horizon: int, seed: int):
    """A random reward per full sequence (no ties with probability 1)."""
    values = np.random.default_rng(seed).normal(size=n_tokens**horizon)
    weights = n_tokens ** np.arange(horizon - 1, -1, -1)
    return lambda ids: float(values[int(ids @ weights)])


def random_potential(seed: int):
    """A random function of the prefix (prompt and completion so far), fixed per prefix."""
    rng, table = np.random.default_rng(seed), {}

    def phi(prompt: np.ndarray, prefix: np.ndarray) -> float:
        key = (tuple(prompt.tolist()), tuple(prefix.tolist()))
        if key not in table:
            table[key] = float(rng.normal(scale=3.0))
        return table[key]

    return phi


def test_solve_known_tree_with_ties():
    env = TokenTreeEnv(3, 2, reward=lambda ids: float(ids[1] == 1))
    solution = solve(env)
    assert solution.value == 1.0
    assert solution.optimal_actions() == (0, 1, 2)
    assert solution.optimal_actions((2,)) == (1,)
    assert solution.optimal_sequences() == [(0, 1), (1, 1), (2, 1)]
    assert solution.q_values((0,)).tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("gamma", [1.0, 0.7])
def test_bellman_equations_hold_for_prefix_rewards(gamma):
    env = PotentialShaping(
        TokenTreeEnv(3, 3, reward=table_reward(3, 3, 0)), random_potential(1), gamma
    )
    solution = solve(env, gamma)
    tree = solution.tree
    for t in range(tree.horizon - 1):
        for index in range(3**t):
            prefix = tree.prefix(t, index)
            for action in range(3):
                child = prefix + (action,)
                row = tree.index(child) * 3 ** (tree.horizon - t - 1)
                expected = tree.stream[row, t] + gamma * solution.v[t + 1][tree.index(child)]
                assert np.isclose(solution.q_values(prefix)[action], expected, atol=1e-12)


def test_policy_values():
    env = TokenTreeEnv(2, 3, reward=table_reward(2, 3, 3))
    solution = solve(env, gamma=0.9)
    uniform = solution.policy_value(lambda prefix: [0.5, 0.5])
    assert np.isclose(uniform, solution.returns[:, 0].mean())
    assert np.isclose(solution.policy_value(solution.greedy_policy()), solution.value)
    v, q = solution.evaluate(solution.greedy_policy())
    assert all(np.allclose(a, b) for a, b in zip(v, solution.v, strict=True))
    with pytest.raises(ValueError, match="expected \\(2, 2\\) rows of non-negative numbers"):
        solution.policy_value([np.array([[1.0, 0.0]]), np.ones((3, 2)), np.ones((4, 2))])


def test_refuses_big_trees_and_wandering_prompts():
    env = TokenTreeEnv(8, 8, reward=lambda ids: 0.0)
    with pytest.raises(ValueError, match="8\\*\\*8 = 16777216 full sequences; .* at most"):
        enumerate_tree(env)
    env = TokenTreeEnv(2, 2, reward=lambda ids: 0.0, prompts=[[0], [1], [2]])
    env.reset(seed=0)
    with pytest.raises(gym.error.Error, match="pass prompt=..."):
        enumerate_tree(env)
    assert enumerate_tree(env, prompt=[1]).prompt_ids == (1,)


@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_potential_shaping_keeps_optimal_policy_and_shifts_q_by_phi(gamma, seed):
    env = TokenTreeEnv(3, 3, reward=table_reward(3, 3, seed))
    phi = random_potential(seed + 10)
    report = is_policy_invariant(env, lambda e: PotentialShaping(e, phi, gamma), gamma)
    assert report.invariant and report.sequences_kept, report.summary()
    base, shaped = report.base, report.wrapped
    prompt = np.array([3])
    for t in range(3):
        for index in range(3**t):
            prefix = base.tree.prefix(t, index)
            potential = phi(prompt, np.array(prefix, dtype=np.int64))
            assert np.allclose(
                shaped.q_values(prefix), base.q_values(prefix) - potential, atol=1e-12
            )
    assert report.return_offset_spread < 1e-12


@pytest.fixture(scope="module")
def transformer_env():
    return TokenTreeEnv(3, 3, reward_seed=2)


@pytest.fixture(scope="module")
def redistributions():
    lm = tiny_causal_lm(3, 3, seed=0)
    return {
        "abc": lambda e: AttentionCredit(e, beta=0.8),
        "uniform": UniformCredit,
        "abc-d": lambda e: GeneratorAttentionCredit(e, model=lm, beta=0.8, device="cpu"),
    }


@pytest.mark.parametrize("name", ["abc", "uniform", "abc-d"])
def test_redistribution_keeps_every_return_at_gamma_one(transformer_env, redistributions, name):
    report = is_policy_invariant(transformer_env, redistributions[name], gamma=1.0)
    assert np.allclose(report.wrapped.returns[:, 0], report.base.returns[:, 0], atol=1e-12)
    assert report.sequences_kept
    # the stream a stock learner sees is the sparse one: nothing changes at all
    stream = is_policy_invariant(transformer_env, redistributions[name], 0.9, view="stream")
    assert stream.invariant and stream.return_offset_spread == 0.0


def test_uniform_credit_keeps_every_states_optimal_actions(transformer_env):
    # G_t = R (H - t) / H is increasing in R for every t, so argmax is unchanged everywhere
    for gamma in (1.0, 0.9):
        assert is_policy_invariant(transformer_env, UniformCredit, gamma).invariant


def test_abc_return_to_go_is_time_inconsistent():
    # The credit given to past tokens depends on the continuation, so maximising the
    # return still to come can prefer another continuation than maximising R: found
    # by the solver on this seeded tree, at states off the optimal path.
    env = TokenTreeEnv(3, 4, reward_seed=1)
    base = solve(enumerate_tree(env))
    wrapped = solve(enumerate_tree(AttentionCredit(env, beta=0.8)), view="token_rewards")
    report = compare_solutions(base, wrapped)
    assert report.sequences_kept and not report.invariant
    assert not any(change.on_optimal_path for change in report.changes)


def test_token_bonus_is_not_policy_invariant():
    env = TokenTreeEnv(3, 3, reward=table_reward(3, 3, 4))
    base = solve(env)
    worst_first = int(np.argmin(base.q_values()))

    class TokenBonus(gym.Wrapper):
        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            return obs, reward + 10.0 * (action == worst_first), terminated, truncated, info

    report = is_policy_invariant(env, TokenBonus, gamma=1.0, view="stream")
    assert not report.invariant and not report.sequences_kept
    assert report.changes[0].prefix == () and report.changes[0].wrapped_actions == (worst_first,)
    assert "NOT invariant" in report.summary()


def _softmax_policy(n_tokens: int, horizon: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = [rng.normal(size=(n_tokens**t, n_tokens)) for t in range(horizon)]
    return [np.exp(z) / np.exp(z).sum(1, keepdims=True) for z in logits]


def test_policy_gradient_is_the_gradient_of_the_policy_value():
    env = TokenTreeEnv(3, 3, reward=table_reward(3, 3, seed=4))
    solution = solve(env)
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=(3**t, 3)) for t in range(3)]

    def value(z):
        return solution.policy_value([np.exp(x) / np.exp(x).sum(1, keepdims=True) for x in z])

    grad = solution.policy_gradient([np.exp(z) / np.exp(z).sum(1, keepdims=True) for z in logits])
    eps = 1e-6
    for t in range(3):
        numeric = np.zeros_like(logits[t])
        for index in np.ndindex(logits[t].shape):
            up = [z.copy() for z in logits]
            down = [z.copy() for z in logits]
            up[t][index] += eps
            down[t][index] -= eps
            numeric[index] = (value(up) - value(down)) / (2 * eps)
        np.testing.assert_allclose(grad[t], numeric, atol=1e-8)


class _ConstantScore(RewardModel):
    """The tiny transformer RM's attention with every score replaced by ``value``."""

    supports_attention = True

    def __init__(self, model: RewardModel, value: float) -> None:
        self.model, self.value = model, value

    def score(self, batch, attention=None):
        output = self.model.score(batch, attention)
        output.scores = np.full(len(batch), self.value)
        return output


def test_abc_moves_the_policy_under_a_constant_score_and_centring_does_not():
    """With R = c for every completion nothing should be learned; ABC's per-token credit
    still pushes the policy (its a_t is normalised over the whole completion, so a token
    that draws attention takes credit from earlier tokens), and spreading R - c does not."""
    rm = TokenTreeEnv(3, 3, reward_seed=1).reward_model
    env = TokenTreeEnv(3, 3, reward=_ConstantScore(rm, 2.0))
    policy = _softmax_policy(3, 3, seed=0)

    def gradient(wrapper, view="token_rewards"):
        tree = enumerate_tree(wrapper(env) if wrapper else env)
        return np.concatenate([g.ravel() for g in solve(tree, view=view).policy_gradient(policy)])

    assert np.abs(gradient(None, "stream")).max() < 1e-12
    assert np.abs(gradient(UniformCredit)).max() < 1e-12
    assert np.abs(gradient(lambda e: AttentionCredit(e, beta=0.8, baseline=2.0))).max() < 1e-12
    abc = gradient(lambda e: AttentionCredit(e, beta=0.8))
    assert np.abs(abc).max() > 1e-3
    # the drift is linear in the score: doubling c doubles it
    env = TokenTreeEnv(3, 3, reward=_ConstantScore(rm, 4.0))
    np.testing.assert_allclose(
        gradient(lambda e: AttentionCredit(e, beta=0.8)), 2 * abc, atol=1e-12
    )


def _exact_group_update(tree, policy, advantages_of, k=2):
    """E over all k-tuples of completions of sum_i sum_t grad log pi(a_it) * A_it, exactly."""
    import itertools

    n, horizon = tree.n_actions, tree.horizon
    probability = np.ones(len(tree.actions))
    for t in range(horizon):
        probability *= policy[t][
            np.arange(len(tree.actions)) // n ** (horizon - t), tree.actions[:, t]
        ]
    update = [np.zeros((n**t, n)) for t in range(horizon)]
    for members in itertools.product(range(len(tree.actions)), repeat=k):
        weight = np.prod(probability[list(members)])
        for i, advantage in zip(members, advantages_of(members)):
            for t in range(horizon):
                state = i // n ** (horizon - t)
                grad = -policy[t][state].copy()
                grad[tree.actions[i, t]] += 1.0
                update[t][state] += weight * advantage[t] * grad
    return update


def test_group_estimators_expected_updates_equal_the_solver_computation():
    """The exact expectation over pairs of completions of TokenRLOO's advantages equals the
    solver's updates: returns to go with a leave-one-out baseline is the returns-to-go policy
    gradient; group-centred credit is the centred credit with the true mean score."""
    from llm_gym.agents.group import group_advantages

    env = TokenTreeEnv(3, 2, reward_seed=2)
    policy = _softmax_policy(3, 2, seed=5)
    tree = enumerate_tree(AttentionCredit(env, beta=0.8))
    solution = solve(tree, view="token_rewards")

    def rtg(members):
        return group_advantages([tree.token_rewards[i] for i in members])

    def centred(members):
        rewards = [tree.token_rewards[i] for i in members]
        maps = [tree.credit_maps[i] for i in members]
        return group_advantages(rewards, maps, estimator="group_centred")

    for advantages_of, expected in (
        (rtg, solution.policy_gradient(policy)),
        (centred, solution.group_centred_update(policy)),
    ):
        exact = _exact_group_update(tree, policy, advantages_of)
        for got, want in zip(exact, expected, strict=True):
            np.testing.assert_allclose(got, 2 * want, atol=1e-12)


def test_group_centred_abc_is_centred_abc_with_the_true_mean_and_sparse_is_the_gradient():
    env = TokenTreeEnv(3, 3, reward_seed=3)
    policy = _softmax_policy(3, 3, seed=1)
    sparse = solve(env)
    true = sparse.policy_gradient(policy)
    for got, want in zip(sparse.group_centred_update(policy), true, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-12)
    mean = sparse.policy_value(policy)
    group = solve(enumerate_tree(AttentionCredit(env, beta=0.8)), view="token_rewards")
    centred = solve(
        enumerate_tree(AttentionCredit(env, beta=0.8, baseline=mean)), view="token_rewards"
    )
    for got, want in zip(group.group_centred_update(policy), centred.policy_gradient(policy)):
        np.testing.assert_allclose(got, want, atol=1e-12)
