"""Stock stable-baselines3 / sb3-contrib algorithms on LLMCompletion-v0 with TokenRewardCallback."""

from __future__ import annotations

import numpy as np
import pytest
from agents_world import UniformCredit, make_env, one_thread  # noqa: F401
from sb3_contrib import MaskablePPO, RecurrentPPO
from sb3_contrib.common.wrappers import ActionMasker
from stable_baselines3 import A2C, PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback

from llm_gym.agents import TokenRewardCallback


class StoredRewards(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.rewards: list[np.ndarray] = []
        self.scores: list[float] = []

    def _on_step(self) -> bool:
        self.scores += [info["score"] for info in self.locals["infos"] if "score" in info]
        return True

    def _on_rollout_end(self) -> None:
        self.rewards.append(self.model.rollout_buffer.rewards.copy())


def test_stock_ppo_runs_on_the_environment():
    model = PPO("MultiInputPolicy", make_env(), n_steps=8, batch_size=8, n_epochs=1, seed=0)
    model.learn(16)


@pytest.mark.parametrize(
    "algorithm, policy",
    [
        (PPO, "MultiInputPolicy"),
        (A2C, "MultiInputPolicy"),
        (MaskablePPO, "MultiInputPolicy"),
        (RecurrentPPO, "MultiInputLstmPolicy"),
    ],
)
def test_callback_applies_token_rewards_for_stock_algorithms(algorithm, policy):
    env = UniformCredit(make_env(max_new_tokens=3))
    if algorithm is MaskablePPO:
        env = ActionMasker(env, lambda e: np.ones(e.action_space.n, dtype=bool))
    kwargs = {"n_steps": 5, "seed": 0}
    if algorithm is not A2C:
        kwargs.update(batch_size=5, n_epochs=1)
    model = algorithm(policy, env, **kwargs)
    stored = StoredRewards()
    model.learn(5 * 4, callback=[TokenRewardCallback(), stored])
    rewards = np.concatenate(stored.rewards)
    np.testing.assert_allclose(rewards.sum(), sum(stored.scores), rtol=1e-5, atol=1e-5)
    assert np.count_nonzero(rewards) > len(stored.scores)


def test_callback_refuses_off_policy_algorithms():
    from gymnasium.wrappers import FlattenObservation, TransformAction

    env = make_env()
    model = SAC(
        "MlpPolicy",
        TransformAction(FlattenObservation(env), lambda a: int(abs(a[0]) * 10), gym_box()),
        learning_starts=1,
    )
    with pytest.raises(TypeError, match="on-policy algorithm"):
        model.learn(2, callback=TokenRewardCallback())


def gym_box():
    import gymnasium as gym

    return gym.spaces.Box(-1, 1, (1,))
