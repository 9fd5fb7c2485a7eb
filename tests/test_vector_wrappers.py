"""Vector reward wrappers give every sub-environment's episode what the single-env wrapper gives it."""

from __future__ import annotations

import numpy as np
import pytest

import llm_gym  # noqa: F401
from llm_gym import assets
from llm_gym.agents import GymnasiumVecEnv
from llm_gym.envs import LLMCompletionEnv, LLMCompletionVectorEnv, make_task
from llm_gym.wrappers import AttentionCredit, PotentialShaping, RelevanceCredit
from llm_gym.wrappers import vector as vector_wrappers


def relevance(prompt, completion):
    return assets.token_relevance(completion)


PAIRS = {
    "relevance": (
        lambda e: RelevanceCredit(e, relevance),
        lambda v: vector_wrappers.RelevanceCredit(v, relevance),
    ),
    "pbrs": (
        lambda e: PotentialShaping(e, "reward_model"),
        lambda v: vector_wrappers.PotentialShaping(v, "reward_model"),
    ),
    "pbrs over abc": (
        lambda e: PotentialShaping(AttentionCredit(e), "reward_model"),
        lambda v: vector_wrappers.PotentialShaping(
            vector_wrappers.AttentionCredit(v), "reward_model"
        ),
    ),
}


@pytest.fixture(scope="module")
def task():
    return make_task("paper", min_new_tokens=0)


@pytest.mark.parametrize("name", list(PAIRS))
def test_vector_wrapper_equals_single_env_wrapper(task, name):
    single_of, vector_of = PAIRS[name]
    n, steps = 3, 40
    envs = vector_of(LLMCompletionVectorEnv(n, completion_task=task))
    actions = np.random.default_rng(0).integers(3, 150, size=(steps, n))
    envs.reset(seed=0)
    vector_credit = [[] for _ in range(n)]
    vector_stream = [[] for _ in range(n)]
    for t in range(steps):
        _, rewards, terminated, _, infos = envs.step(actions[t])
        for i in range(n):
            vector_stream[i].append(float(rewards[i]))
        for i in np.flatnonzero(terminated):
            vector_credit[i].append(infos["token_rewards"][i])
    for i in range(n):
        env = single_of(LLMCompletionEnv(completion_task=task))
        env.reset(seed=i)
        single, stream, ended = [], [], False
        for t in range(steps):
            if ended:
                env.reset()
                ended = False
                stream.append(0.0)
                continue
            _, reward, ended, _, info = env.step(int(actions[t, i]))
            stream.append(float(reward))
            if ended:
                single.append(info["token_rewards"])
        assert len(single) == len(vector_credit[i]) >= 2
        for a, b in zip(single, vector_credit[i], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(stream, vector_stream[i], atol=1e-5)


def test_vector_potential_shaping_through_the_sb3_adapter_resets_the_right_envs(task):
    venv = GymnasiumVecEnv(
        vector_wrappers.PotentialShaping(
            LLMCompletionVectorEnv(2, completion_task=task), "reward_model"
        )
    )
    venv.seed(0)
    venv.reset()
    totals, returns = np.zeros(2), []
    for _ in range(40):
        _, rewards, dones, infos = venv.step(np.array([5, 6]))
        totals += rewards
        for i in np.flatnonzero(dones):
            assert sum(infos[i]["token_rewards"]) == pytest.approx(totals[i], abs=1e-5)
            returns.append(totals[i])
            totals[i] = 0.0
    assert len(returns) >= 4
