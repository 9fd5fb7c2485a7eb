"""The reward-model critic: ``critic="reward-model"``, a trainable copy of the task's RM."""

from __future__ import annotations

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch
from agents_world import command_line_preset, one_thread  # noqa: F401  (fixture)

from llm_gym import assets
from llm_gym.agents import TokenPPO
from llm_gym.agents.reward_model_critic import RewardModelCritic
from llm_gym.experiments.presets import ComparePreset
from llm_gym.experiments.runs import make_agent
from llm_gym.rewards import CompletionBatch, HFRewardModel
from llm_gym.rewards.loading import load_tokenizer

DECISIVE = ComparePreset(task="decisive", critic="reward-model", n_envs=2, max_new_tokens=4)


def _rm_scores(name: str, windows: list[np.ndarray]) -> np.ndarray:
    """The bundled reward model's own scores of each window's text (independent path)."""
    rm = HFRewardModel(str(assets.reward_model_path(name)), device="cpu")
    tokenizer = load_tokenizer(str(assets.TOKENIZER_DIR))
    return rm(
        CompletionBatch([w[:-1] for w in windows], [w[-1:] for w in windows], tokenizer)
    ).scores


def test_values_start_as_the_reward_models_scores_of_the_text_so_far():
    model = make_agent("sparse", 0, DECISIVE)
    assert isinstance(model.policy.value_net, RewardModelCritic)
    # windows of different lengths, left-padded as the environment lays them out
    ids = torch.tensor([[0, 0, 0, 5, 10, 11], [0, 7, 8, 9, 10, 12], [0, 0, 0, 0, 0, 30]])
    mask = (torch.arange(6) >= torch.tensor([[3], [1], [5]])).long()
    values = model.policy.predict_values({"input_ids": ids, "attention_mask": mask})
    windows = [row[m > 0].numpy() for row, m in zip(ids, mask)]
    np.testing.assert_allclose(
        values.squeeze(-1).detach().numpy(), _rm_scores("decisive", windows), atol=1e-5
    )


def test_cached_rollout_values_and_shared_prefix_update_values_equal_the_scores():
    critic = RewardModelCritic(str(assets.reward_model_path("decisive")))
    # one episode of two envs, a token a step, left-padded windows of 6 (as the env's)
    tokens = torch.tensor([[5, 10, 11, 12, 13, 14, 15], [7, 8, 9, 20, 21, 22, 23]])
    windows, masks = [], []
    for t in range(3, 8):
        ids = torch.zeros(2, 6, dtype=torch.long)
        mask = torch.zeros(2, 6, dtype=torch.long)
        ids[:, 6 - min(t, 6) :], mask[:, 6 - min(t, 6) :] = tokens[:, max(t - 6, 0) : t], 1
        windows.append(ids)
        masks.append(mask)
    expected = _rm_scores(
        "decisive",
        [w[m > 0].numpy() for ids, mask in zip(windows, masks) for w, m in zip(ids, mask)],
    )
    critic.eval()
    with torch.no_grad():  # a rollout: the trunk's key/value cache grows a token a step
        rollout = torch.cat([critic(ids, mask) for ids, mask in zip(windows, masks)])
    critic.train()
    update = critic(torch.cat(windows), torch.cat(masks))  # one forward per episode
    np.testing.assert_allclose(rollout[:, 0].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(update[:, 0].detach().numpy(), expected, atol=1e-5)


def test_loading_weights_into_the_critic_drops_its_cache():
    critic = RewardModelCritic(str(assets.reward_model_path("decisive"))).eval()
    ids, mask = torch.tensor([[0, 5, 10, 11]]), torch.tensor([[0, 1, 1, 1]])
    longer, longer_mask = torch.tensor([[5, 10, 11, 12]]), torch.ones(1, 4, dtype=torch.long)
    with torch.no_grad():
        critic(ids, mask)  # the cache now holds keys and values of the old weights
        state = {k: v + 0.01 for k, v in critic.state_dict().items()}
        critic.load_state_dict(state)
        cached = critic(longer, longer_mask)  # one token on from the cached window
    critic.train()
    fresh = critic(longer, longer_mask)  # a full forward with the loaded weights
    torch.testing.assert_close(cached, fresh.detach(), atol=1e-5, rtol=0)


def test_the_value_loss_trains_the_copy_and_neither_the_lm_nor_the_env_reward_model():
    model = make_agent("sparse", 0, DECISIVE)
    window = {
        "input_ids": torch.tensor([[5, 6, 7, 8]]),
        "attention_mask": torch.ones(1, 4, dtype=torch.long),
    }
    model.policy.predict_values(window).sum().backward()
    critic = model.policy.value_net
    assert all(p.grad is not None for p in critic.parameters())
    assert all(p.grad is None for p in model.policy.lm.parameters())  # values do not read the LM
    # the optimizer holds the critic's weights, and training leaves the task's RM as bundled
    held = {id(p) for group in model.policy.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in held for p in critic.parameters())
    env_rm = model.env.envs[0].unwrapped.task.reward_model.model
    assert not ({id(p) for p in env_rm.parameters()} & held)  # a copy, not the env's RM
    before = [p.detach().clone() for p in critic.parameters()]
    bundled = [p.detach().clone() for p in env_rm.parameters()]
    model.learn(2 * model.n_steps * model.n_envs)
    assert any(not torch.equal(a, p) for a, p in zip(before, critic.parameters()))
    assert all(torch.equal(a, p) for a, p in zip(bundled, env_rm.parameters()))


@pytest.mark.usefixtures("one_thread")
def test_a_saved_agent_loads_with_its_trained_critic(tmp_path):
    model = make_agent("sparse", 0, DECISIVE)
    model.learn(model.n_steps * model.n_envs)
    model.save(tmp_path / "agent")
    loaded = TokenPPO.load(tmp_path / "agent", env=model.env)
    assert loaded.policy.critic == "reward-model"
    window = {
        "input_ids": torch.tensor([[5, 6, 7, 8]]),
        "attention_mask": torch.ones(1, 4, dtype=torch.long),
    }
    with torch.no_grad():
        assert torch.equal(
            model.policy.predict_values(window), loaded.policy.predict_values(window)
        )


def test_the_compare_preset_reads_the_tasks_own_reward_model(tmp_path, monkeypatch):
    model = make_agent("sparse", 0, replace(DECISIVE, task="interaction"))
    assert model.policy.critic_model == str(assets.reward_model_path("interaction"))
    argv = ["--critic", "reward-model", "--task", "decisive", "--out", str(tmp_path)]
    assert command_line_preset(argv, monkeypatch).critic == "reward-model"
    with pytest.raises(
        ValueError, match=r"critic='reward-model' is TokenPPO's value function; agent 'grpo'"
    ):
        ComparePreset(agent="grpo", critic="reward-model")


def test_bad_critic_models_are_named(tiny_bert_rm, tiny_gpt2_rm):
    env = gym.make("LLMCompletion-v0", max_new_tokens=2)
    with pytest.raises(
        ValueError, match=r"critic 'reward-model' needs critic_model.*critic_model=None"
    ):
        TokenPPO("CausalLMPolicy", env, n_steps=2, policy_kwargs={"critic": "reward-model"})
    with pytest.raises(ValueError, match=r"no other critic takes one; got critic='detached'"):
        TokenPPO("CausalLMPolicy", env, n_steps=2, policy_kwargs={"critic_model": tiny_gpt2_rm})
    with pytest.raises(ValueError, match=r"needs a decoder reward model .* pools its first token"):
        RewardModelCritic(tiny_bert_rm)
    with pytest.raises(
        ValueError, match=r"observation input_ids go up to \d+ but the critic's reward model"
    ):
        TokenPPO(
            "CausalLMPolicy",
            env,
            n_steps=2,
            policy_kwargs={"critic": "reward-model", "critic_model": tiny_gpt2_rm},
        )


def test_a_compare_reward_model_on_another_tokenizer_is_refused_before_training(tiny_gpt2_rm):
    preset = ComparePreset(
        reward_model=tiny_gpt2_rm, critic="reward-model", n_envs=2, max_new_tokens=2
    )
    with pytest.raises(
        ValueError, match=r"on the environment's tokenizer, got pooling 'last' and another"
    ):
        make_agent("sparse", 0, preset)
