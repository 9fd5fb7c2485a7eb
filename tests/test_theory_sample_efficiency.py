"""The sample-efficiency script's callback: token rewards reach the stored transitions."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from stable_baselines3 import DQN, PPO

from llm_gym.envs import TokenTreeEnv
from llm_gym.wrappers import UniformCredit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from theory_sample_efficiency import TokenRewardsIntoBuffer  # noqa: E402


def env():
    return UniformCredit(
        TokenTreeEnv(3, 2, reward=lambda ids: float(ids.sum() + 1), observation="onehot")
    )


def test_on_policy_rollout_holds_token_rewards():
    model = PPO("MlpPolicy", env(), n_steps=8, batch_size=8, n_epochs=1, seed=0, device="cpu")
    model.learn(8, callback=TokenRewardsIntoBuffer())
    episodes = model.rollout_buffer.rewards.reshape(-1, 2)
    assert np.allclose(episodes[:, 0], episodes[:, 1])  # uniform: R / 2 on each token
    assert (episodes > 0).all()


def test_replay_buffer_holds_token_rewards():
    model = DQN("MlpPolicy", env(), learning_starts=100, buffer_size=100, seed=0, device="cpu")
    model.learn(10, callback=TokenRewardsIntoBuffer())
    stored = model.replay_buffer.rewards[:10, 0].reshape(-1, 2)
    assert np.allclose(stored[:, 0], stored[:, 1]) and (stored > 0).all()
