"""TokenPPO over the native Gymnasium vector env through the SB3 VecEnv adapter."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from agents_world import one_thread  # noqa: F401  (autouse fixture)

from llm_gym.agents import GymnasiumVecEnv, TokenPPO


def test_adapter_matches_sb3_conventions_and_trains():
    venv = gym.make_vec("LLMCompletion-v0", num_envs=3, max_new_tokens=2, eos_ends_episode=False)
    model = TokenPPO("CausalLMPolicy", venv, n_steps=4, batch_size=12, n_epochs=1, seed=0)
    assert isinstance(model.get_env(), GymnasiumVecEnv)
    model.learn(12)
    adapter = GymnasiumVecEnv(gym.make_vec("LLMCompletion-v0", num_envs=2, max_new_tokens=2))
    adapter.seed(0)
    first = adapter.reset()
    adapter.step(np.array([5, 6]))
    obs, rewards, dones, infos = adapter.step(np.array([5, 6]))
    assert dones.all() and all("token_rewards" in info for info in infos)
    np.testing.assert_array_equal(infos[0]["terminal_observation"]["input_ids"][-2:], [5, 5])
    # the finished episodes were reset in the same step: the windows hold prompts only
    assert all(env.completion_ids.size == 0 for env in adapter.env.envs)
    assert first["input_ids"].shape == obs["input_ids"].shape
