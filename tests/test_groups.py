"""Groups of completions per prompt, and the critic-free group agents TokenRLOO and TokenGRPO."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from agents_world import one_thread  # noqa: F401  (autouse fixture)
from stable_baselines3.common.callbacks import BaseCallback

import llm_gym  # noqa: F401
from llm_gym.agents import TokenGRPO, TokenRLOO, evaluate_completions
from llm_gym.agents.group import group_advantages
from llm_gym.envs import LLMCompletionEnv
from llm_gym.wrappers import vector as vector_wrappers


def grouped(num_envs=8, group_size=4, **kwargs):
    return gym.make_vec("LLMCompletion-v0", num_envs=num_envs, group_size=group_size, **kwargs)


# ---------------------------------------------------------------- the environment
def test_groups_share_prompt_and_horizon_drawn_from_a_seeded_generator():
    envs = grouped(task="paper")
    obs, info = envs.reset(seed=7)
    horizons = [env.horizon for env in envs.unwrapped.envs]
    for g in range(2):
        members = slice(4 * g, 4 * g + 4)
        assert (obs["input_ids"][members] == obs["input_ids"][4 * g]).all()
        assert len(set(horizons[members])) == 1
        assert info["group"][members].tolist() == [g] * 4
    assert info["group_episode"].tolist() == [0] * 8
    # the seed fixes the prompts; the first member draws what it would draw alone
    again, _ = grouped(task="paper").reset(seed=7)
    assert np.array_equal(obs["input_ids"], again["input_ids"])
    other, _ = grouped(task="paper").reset(seed=8)
    assert not np.array_equal(obs["input_ids"], other["input_ids"])
    alone = LLMCompletionEnv(task="paper")
    alone.reset(seed=7 + 4)
    assert np.array_equal(envs.unwrapped.envs[4].prompt_ids, alone.prompt_ids)
    assert envs.unwrapped.envs[4].horizon == alone.horizon


def test_group_size_one_changes_nothing():
    plain = gym.make_vec("LLMCompletion-v0", num_envs=3, task="paper")
    ones = gym.make_vec("LLMCompletion-v0", num_envs=3, task="paper", group_size=1)
    rng = np.random.default_rng(0)
    a, _ = plain.reset(seed=2)
    b, _ = ones.reset(seed=2)
    for _ in range(30):
        for key in a:
            assert np.array_equal(a[key], b[key])
        actions = rng.integers(3, 150, size=3)
        a, ra, ta, _, ia = plain.step(actions)
        b, rb, tb, _, ib = ones.step(actions)
        assert np.array_equal(ra, rb) and np.array_equal(ta, tb)
        assert set(ib) - set(ia) <= {"group", "_group", "group_episode", "_group_episode"}


def test_a_member_that_ends_early_starts_its_groups_next_prompt():
    envs = grouped(num_envs=4, group_size=2, task="paper")  # EOS ends episodes after 8 tokens
    envs.reset(seed=0)
    eos = envs.unwrapped.task.eos_token_id
    members = envs.unwrapped.envs
    starts: dict[tuple[int, int], list[list[int]]] = {}
    for _ in range(40):
        actions = np.full(4, 5)
        if len(members[0].completion_ids) >= 8:
            actions[0] = eos  # member 0 of group 0 stops as soon as it may
        _, _, terminated, _, infos = envs.step(actions)
        for i in range(4):
            if (
                "group_episode" in infos
                and infos["_group_episode"][i]
                and members[i].completion_ids.size == 0
            ):
                key = (int(infos["group"][i]), int(infos["group_episode"][i]))
                starts.setdefault(key, []).append(members[i].prompt_ids.tolist())
    # member 0 ran ahead of member 1 in group 0, yet each episode index had one prompt
    assert len(starts[(0, 1)]) == 2 and starts[(0, 1)][0] == starts[(0, 1)][1]
    assert any(len(prompts) == 1 for key, prompts in starts.items() if key[0] == 0)


def test_bad_group_sizes_are_refused():
    with pytest.raises(ValueError, match=r"num_envs=6 is not a multiple of group_size=4"):
        grouped(num_envs=6, group_size=4)
    with pytest.raises(ValueError, match=r"group_size must be an int >= 1"):
        grouped(group_size=0)


# ---------------------------------------------------------------- advantages
class Advantages(BaseCallback):
    """Each rollout's stored advantages and the completions' rewards and groups."""

    def __init__(self):
        super().__init__()
        self.rollouts = []

    def _on_rollout_start(self):
        self._ended = {}
        self._t = 0

    def _on_step(self):
        for i, done in enumerate(self.locals["dones"]):
            if done and i not in self._ended:
                info = self.locals["infos"][i]
                self._ended[i] = (self._t, info["group"], info["token_rewards"], info["score"])
        self._t += 1
        return True

    def _on_rollout_end(self):
        buffer = self.model.rollout_buffer
        self.rollouts.append((buffer.advantages.copy(), buffer.weights.copy(), dict(self._ended)))


@pytest.mark.parametrize("agent", [TokenRLOO, TokenGRPO])
def test_sparse_advantages_are_rloo_and_grpo_on_every_token(agent):
    envs = grouped(num_envs=6, group_size=3, task="paper", min_new_tokens=0)
    model = agent(
        "CausalLMPolicy", envs, batch_size=16, n_epochs=1, kl_coef=0.0, kl_target=None, seed=0
    )
    recorder = Advantages()
    model.learn(16 * 6 * 3, callback=recorder)
    for advantages, weights, ended in recorder.rollouts:
        assert sorted(ended) == list(range(6))
        for g in range(2):
            members = [i for i in ended if ended[i][1] == g]
            scores = np.array([ended[i][3] for i in members])
            for k, i in enumerate(members):
                last = ended[i][0]
                if agent is TokenRLOO:
                    expected = scores[k] - np.delete(scores, k).mean()
                else:
                    expected = (scores[k] - scores.mean()) / (scores.std() + 1e-4)
                np.testing.assert_allclose(
                    advantages[: last + 1, i], expected, rtol=1e-5, atol=1e-5
                )
                assert (advantages[last + 1 :, i] == 0).all() and (
                    weights[last + 1 :, i] == 0
                ).all()
                np.testing.assert_allclose(weights[: last + 1, i], 1 / (6 * (last + 1)), rtol=1e-6)


def test_dense_estimators_equal_a_hand_computation():
    rewards = [np.array([1.0, 0.0, 2.0]), np.array([0.5, 0.5]), np.array([0.0, 0.0, 3.0])]
    # returns to go: [3, 2, 2], [1, 0.5], [3, 3, 3]; a shorter one holds its last value
    rtg = group_advantages(rewards, estimator="returns_to_go", baseline="leave_one_out")
    np.testing.assert_allclose(rtg[0], [3 - (1 + 3) / 2, 2 - (0.5 + 3) / 2, 2 - (0.5 + 3) / 2])
    np.testing.assert_allclose(rtg[1], [1 - (3 + 3) / 2, 0.5 - (2 + 3) / 2])
    np.testing.assert_allclose(rtg[2], [3 - (3 + 1) / 2, 3 - (2 + 0.5) / 2, 3 - (2 + 0.5) / 2])
    maps = [np.array([0.5, 0.0, 0.5]), np.array([0.2, 0.8]), np.array([0.0, 0.0, 1.0])]
    centred = group_advantages(rewards, maps, estimator="group_centred", baseline="mean")
    scores = np.array([3.0, 1.0, 3.0])
    d = scores - scores.mean()
    np.testing.assert_allclose(centred[0], d[0] * np.array([1.0, 0.5, 0.5]))
    np.testing.assert_allclose(centred[1], d[1] * np.array([1.0, 0.8]))
    np.testing.assert_allclose(centred[2], d[2] * np.array([1.0, 1.0, 1.0]))
    kl = [np.array([-0.1, -0.1, -0.1]), np.array([0.0, -0.2]), np.array([0.0, 0.0, 0.0])]
    with_kl = group_advantages(rewards, kl_terms=kl, scale_rewards="group")
    totals = [r + t for r, t in zip(rewards, kl)]
    unscaled = group_advantages(totals)
    returns = np.array([t.sum() for t in totals])
    for a, b in zip(with_kl, unscaled):
        np.testing.assert_allclose(a, b / (returns.std() + 1e-4))


def test_group_centred_abc_spreads_the_group_deviation_by_the_credit_map():
    envs = vector_wrappers.AttentionCredit(grouped(num_envs=4, group_size=2, max_new_tokens=4))
    model = TokenRLOO(
        "CausalLMPolicy",
        envs,
        estimator="group_centred",
        batch_size=8,
        n_epochs=1,
        kl_coef=0.0,
        kl_target=None,
        seed=0,
    )
    recorder = Advantages()
    model.learn(4 * 4 * 2, callback=recorder)
    advantages, _, ended = recorder.rollouts[-1]
    buffer_infos = {e.env: info for e, _, info in model.rollout_buffer.finished if e.rows[0] == 0}
    for g in range(2):
        members = [i for i in ended if ended[i][1] == g]
        a, b = (ended[i][3] for i in members)
        for i, deviation in zip(members, (a - b, b - a)):
            m = np.asarray(buffer_infos[i]["credit_map"])
            np.testing.assert_allclose(
                advantages[:4, i], deviation * np.cumsum(m[::-1])[::-1], atol=1e-5
            )


# ---------------------------------------------------------------- learning, save/load
@pytest.mark.slow
def test_a_group_agent_raises_the_score_within_a_short_budget():
    envs = grouped(num_envs=16, group_size=4, max_new_tokens=8)
    # a short run: a larger step size and a quicker KL controller than the defaults (5e-4, which
    # TokenPPO's learning test uses, moves a policy without a critic too far per update)
    model = TokenRLOO(
        "CausalLMPolicy", envs, batch_size=64, learning_rate=2e-4, kl_horizon=1000, seed=0
    )
    before = evaluate_completions(model, n_episodes=128, seed=1000, max_new_tokens=8)
    model.learn(16 * 8 * 48)
    after = evaluate_completions(model, n_episodes=128, seed=1000, max_new_tokens=8)
    print(
        f"\nscore {before['score']:+.2f} -> {after['score']:+.2f}, distinct {after['distinct']:.2f}"
    )
    assert after["score"] > before["score"] + 0.5
    assert after["distinct"] > 0.6


@pytest.mark.parametrize("agent", [TokenRLOO, TokenGRPO])
def test_save_load_round_trip_is_exact(agent, tmp_path):
    envs = grouped(num_envs=4, group_size=2, max_new_tokens=3)
    model = agent("CausalLMPolicy", envs, batch_size=6, learning_rate=1e-3, kl_mode="loss", seed=0)
    model.learn(24)
    model.save(tmp_path / "model")
    loaded = agent.load(tmp_path / "model")
    assert (loaded.estimator, loaded.scale_rewards, loaded.kl_mode) == (
        model.estimator,
        model.scale_rewards,
        model.kl_mode,
    )
    assert loaded.kl.coef == model.kl.coef
    for (name, a), b in zip(model.policy.state_dict().items(), loaded.policy.state_dict().values()):
        assert torch.equal(a, b), name
    obs, _ = envs.reset(seed=1)
    torch.manual_seed(3)
    first = model.predict(obs)[0]
    torch.manual_seed(3)
    assert np.array_equal(first, loaded.predict(obs)[0])


def test_group_agents_refuse_what_they_cannot_train_on():
    with pytest.raises(ValueError, match=r"n_steps=2 is shorter than the longest completion \(3"):
        TokenRLOO("CausalLMPolicy", grouped(num_envs=4, group_size=2, max_new_tokens=3), n_steps=2)
    with pytest.raises(ValueError, match=r"estimator must be one of"):
        TokenRLOO("CausalLMPolicy", grouped(num_envs=4, group_size=2), estimator="gae")
    model = TokenRLOO(
        "CausalLMPolicy",
        gym.make_vec("LLMCompletion-v0", num_envs=2, max_new_tokens=2),
        batch_size=4,
    )
    with pytest.raises(ValueError, match=r"group_size=4"):
        model.learn(4)
