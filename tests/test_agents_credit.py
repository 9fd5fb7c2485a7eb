"""Token credit reaches the stored transitions exactly once: the buffer, and TokenPPO end to end."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from agents_world import one_thread  # noqa: F401
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.callbacks import BaseCallback

import llm_gym  # noqa: F401
from llm_gym.agents import TokenPPO, TokenRolloutBuffer

OBS = gym.spaces.Dict(
    {
        "input_ids": gym.spaces.Box(0, 9, (2,), dtype=np.int64),
        "attention_mask": gym.spaces.Box(0, 1, (2,), dtype=np.int64),
    }
)


@settings(max_examples=150, deadline=None)
@given(
    n_envs=st.integers(1, 3),
    n_steps=st.integers(1, 6),
    rollouts=st.integers(1, 4),
    seed=st.integers(0, 10_000),
)
def test_the_buffer_stores_each_episode_token_rewards_minus_penalties(
    n_envs, n_steps, rollouts, seed
):
    rng = np.random.default_rng(seed)
    buffer = TokenRolloutBuffer(n_steps, OBS, gym.spaces.Discrete(10), "cpu", n_envs=n_envs)
    obs = {k: np.zeros((n_envs, 2), dtype=np.int64) for k in OBS}
    left = rng.integers(1, 9, size=n_envs)  # steps left in each env's episode
    steps: list[list[tuple[int, int]]] = [[] for _ in range(n_envs)]  # (rollout, row) per step
    episodes = []  # (env, [(rollout, row)], token_rewards, streamed)
    streamed_of: list[list[float]] = [[] for _ in range(n_envs)]
    stored, penalties = [], []
    for r in range(rollouts):
        buffer.reset()
        for row in range(n_steps):
            dones = left == 1
            rewards = np.where(dones, rng.normal(size=n_envs), 0.0).astype(np.float32)
            buffer.add(
                obs,
                np.zeros((n_envs, 1)),
                rewards,
                np.zeros(n_envs),
                torch.zeros(n_envs),
                torch.zeros(n_envs),
            )
            credit = [None] * n_envs
            for i in range(n_envs):
                steps[i].append((r, row))
                streamed_of[i].append(float(rewards[i]))
                if dones[i]:
                    token_rewards = rng.normal(size=len(steps[i]))
                    credit[i] = token_rewards
                    episodes.append((i, steps[i], token_rewards, streamed_of[i]))
                    steps[i], streamed_of[i] = [], []
                    left[i] = rng.integers(1, 9)
                else:
                    left[i] -= 1
            buffer.end_episodes(dones, credit)
        penalty = rng.normal(size=(n_steps, n_envs))
        buffer.penalties = penalty
        buffer.compute_returns_and_advantage(torch.zeros(n_envs), np.zeros(n_envs))
        stored.append(buffer.rewards.copy())
        penalties.append(penalty.astype(np.float32))
    for i, where, token_rewards, streamed in episodes:
        total = sum(float(stored[r][row, i] + penalties[r][row, i]) for r, row in where)
        # every episode keeps exactly its credit: nothing lost, nothing counted twice
        assert np.isclose(total, token_rewards.sum(), atol=1e-4)
        last = where[-1][0]
        inside = [k for k, (r, _) in enumerate(where) if r == last]
        for k in inside[1:]:  # the finishing rollout's rows hold their own token reward
            r, row = where[k]
            assert np.isclose(stored[r][row, i] + penalties[r][row, i], token_rewards[k], atol=1e-5)
        for k, (r, row) in enumerate(where[: inside[0]]):  # earlier rollouts kept the stream
            assert np.isclose(stored[r][row, i] + penalties[r][row, i], streamed[k], atol=1e-6)


class SeededCredit(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Test double: random token rewards (seeded by the completion) summing to the score."""

    def __init__(self, env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            n = len(info["completion_ids"])
            noise = np.random.default_rng(sum(info["completion_ids"])).normal(size=n)
            info["token_rewards"] = (noise - noise.mean() + info["score"] / n).tolist()
        return obs, reward, terminated, truncated, info


class Transitions(BaseCallback):
    """Per rollout: the stored rewards, the KL penalty, and each step's dones and infos."""

    def __init__(self):
        super().__init__()
        self.rollouts = []
        self._steps = []

    def _on_rollout_start(self):
        self._steps = []

    def _on_step(self):
        self._steps.append((self.locals["dones"].copy(), list(self.locals["infos"])))
        return True

    def _on_rollout_end(self):
        buffer = self.model.rollout_buffer
        penalty = self.model.kl.coef * self.model.last_kl
        self.rollouts.append((buffer.rewards.copy(), penalty.astype(np.float32), self._steps))


@settings(max_examples=6, deadline=None)
@given(
    lengths=st.tuples(st.integers(1, 3), st.integers(0, 3)),
    n_steps=st.integers(2, 7),
    n_envs=st.integers(1, 3),
)
def test_token_ppo_stores_token_rewards_plus_the_kl_term_across_rollouts(lengths, n_steps, n_envs):
    low, extra = lengths
    env = SeededCredit(
        gym.make(
            "LLMCompletion-v0", task="paper", max_new_tokens=(low, low + extra), min_new_tokens=0
        )
    )
    model = TokenPPO(
        "CausalLMPolicy",
        env,
        n_envs=n_envs,
        n_steps=n_steps,
        batch_size=max(2, n_steps * n_envs),
        n_epochs=1,
        kl_coef=0.3,
        kl_target=None,
        learning_rate=1e-3,
        seed=0,
    )
    recorder = Transitions()
    model.learn(n_steps * n_envs * 4, callback=recorder)
    for i in range(n_envs):
        rows: list[tuple[float, float]] = []  # (stored, KL term) of the episode in progress
        checked = 0
        for stored, penalty, steps in recorder.rollouts:
            for t, (dones, infos) in enumerate(steps):
                rows.append((float(stored[t, i]), float(penalty[t, i])))
                if dones[i]:
                    token_rewards = infos[i]["token_rewards"]
                    total = sum(s + p for s, p in rows)
                    assert np.isclose(total, sum(token_rewards), atol=1e-4)
                    if len(rows) <= t + 1:  # the whole episode in this rollout: exact per token
                        np.testing.assert_allclose(
                            [s + p for s, p in rows], token_rewards, atol=1e-5
                        )
                    rows, checked = [], checked + 1
        assert checked >= 1
