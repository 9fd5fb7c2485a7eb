"""CausalLMPolicy: pretrained weights, cached decoding, sampling options, errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from agents_world import make_env, one_thread  # noqa: F401
from stable_baselines3.common.utils import obs_as_tensor

from llm_gym import assets
from llm_gym.agents import CausalLMPolicy, TokenPPO
from llm_gym.agents.decoding import _prefix_roots
from llm_gym.agents.policy import load_causal_lm


def make_policy(env: gym.Env, **kwargs) -> CausalLMPolicy:
    return CausalLMPolicy(env.observation_space, env.action_space, lambda _: 3e-5, **kwargs)


def test_pretrained_weights_survive_construction():
    env = make_env()
    policy = make_policy(env)
    fresh = load_causal_lm(None).state_dict()
    for name, tensor in policy.lm.state_dict().items():
        assert torch.equal(tensor, fresh[name]), name
    assert not any(
        isinstance(m, torch.nn.Linear)
        and m.out_features == env.action_space.n
        and m.in_features == env.action_space.n
        for m in policy.modules()
    )


def test_vocabulary_mismatch_is_a_clear_error():
    env = make_env()
    wrong = gym.spaces.Discrete(env.action_space.n + 5)
    with pytest.raises(ValueError, match=r"vocabulary of \d+ tokens but the action space"):
        CausalLMPolicy(env.observation_space, wrong, lambda _: 3e-5)
    with pytest.raises(ValueError, match="observation_space must be Dict"):
        CausalLMPolicy(gym.spaces.Box(0, 1, (4,)), env.action_space, lambda _: 3e-5)


def _episode_observations(env: gym.Env, seed: int) -> list[dict[str, np.ndarray]]:
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    observations, done = [obs], False
    while not done:
        obs, _, done, _, _ = env.step(env.action_space.sample())
        observations.append(obs)
    return observations[:-1]


def test_cached_rollout_equals_full_forward_with_left_padding():
    envs = [make_env(max_new_tokens=6) for _ in range(3)]
    for i, env in enumerate(envs):
        env.action_space.seed(i)
    policy = make_policy(envs[0]).eval()
    episodes = [_episode_observations(env, seed) for seed, env in enumerate(envs)]
    # ragged prompts: rows are left-padded differently
    assert len({int(e[0]["attention_mask"].sum()) for e in episodes}) > 1
    actions = torch.tensor([3, 5, 7])
    for t in range(6):
        batch = {
            k: np.stack([e[t][k] for e in episodes]).astype(np.float32) for k in episodes[0][0]
        }
        obs = obs_as_tensor(batch, "cpu")
        with torch.no_grad():
            cached = policy.get_distribution(obs).log_prob(actions)
        with torch.enable_grad():
            _, full, _ = policy.evaluate_actions(obs, actions)
        torch.testing.assert_close(cached, full.detach(), atol=1e-4, rtol=0)


def test_top_k_and_temperature_log_probs_are_of_the_sampled_distribution():
    env = make_env()
    policy = make_policy(env, temperature=0.7, top_k=5).eval()
    obs, _ = env.reset(seed=0)
    batch = obs_as_tensor(
        {k: np.repeat(v[None], 64, 0).astype(np.float32) for k, v in obs.items()}, "cpu"
    )
    with torch.no_grad():
        actions, _, log_probs = policy(batch)
    assert len(set(actions.tolist())) <= 5
    with torch.enable_grad():
        _, log_probs_again, _ = policy.evaluate_actions(batch, actions)
    torch.testing.assert_close(log_probs, log_probs_again.detach(), atol=1e-4, rtol=0)
    # the sampled distribution sums to one over the top 5 tokens
    with torch.no_grad():
        probs = torch.softmax(policy.logits(policy.hidden_state(batch)[:1]), -1)
    assert float(probs.topk(5).values.sum()) == pytest.approx(1.0, abs=1e-5)


def test_dropout_stays_off_in_updates_and_critic_is_detached():
    env = make_env()
    policy = make_policy(env)
    policy.set_training_mode(True)
    assert not policy.lm.training
    obs, _ = env.reset(seed=0)
    batch = obs_as_tensor({k: v[None].astype(np.float32) for k, v in obs.items()}, "cpu")
    values = policy.predict_values(batch)
    values.sum().backward()
    assert all(p.grad is None for p in policy.lm.parameters())


def test_registered_alias_and_embedded_default():
    assert TokenPPO.policy_aliases["CausalLMPolicy"] is CausalLMPolicy
    assert assets.LM_DIR.is_dir()


def test_update_forward_shares_one_forward_per_episode_exactly():
    envs = [make_env(max_new_tokens=6) for _ in range(3)]
    for i, env in enumerate(envs):
        env.action_space.seed(i)
    episodes = [_episode_observations(env, seed) for seed, env in enumerate(envs)]
    windows = [w for episode in episodes for w in episode]
    batch = {k: np.stack([w[k] for w in windows]).astype(np.float32) for k in windows[0]}
    obs = obs_as_tensor(batch, "cpu")
    policy = make_policy(envs[0])
    ids, mask = obs["input_ids"].long(), obs["attention_mask"].long()
    root, _ = _prefix_roots(ids, mask)
    assert len(set(root.tolist())) <= 3  # one forward per episode
    shared = policy.hidden_state(obs)
    separate = torch.cat(
        [
            policy.lm.base_model(
                input_ids=ids[i : i + 1],
                attention_mask=mask[i : i + 1],
                position_ids=(mask[i : i + 1].cumsum(-1) - 1).clamp(min=0),
            ).last_hidden_state[:, -1]
            for i in range(len(ids))
        ]
    )
    torch.testing.assert_close(shared, separate, atol=1e-4, rtol=0)


def test_incremental_decoder_equals_full_forward_when_windows_slide_and_rows_restart():
    from transformers import GPT2Config, GPT2LMHeadModel

    from llm_gym.agents.decoding import IncrementalDecoder, position_ids_from_mask

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, bos_token_id=0)
    config.eos_token_id = 0
    lm = GPT2LMHeadModel(config).eval()
    length, batch = 12, 6
    decoder = IncrementalDecoder(lm.base_model)

    def prompt() -> tuple[torch.Tensor, torch.Tensor]:
        n = int(torch.randint(1, 5, ()))
        ids, mask = torch.zeros(length, dtype=torch.long), torch.zeros(length, dtype=torch.long)
        ids[-n:], mask[-n:] = torch.randint(1, 50, (n,)), 1
        return ids, mask

    rows = [prompt() for _ in range(batch)]
    ids, mask = torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])
    for _ in range(40):  # long enough for windows to fill and then slide out real tokens
        full = lm.base_model(
            ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)
        ).last_hidden_state[:, -1]
        torch.testing.assert_close(decoder(ids, mask), full, atol=1e-5, rtol=0)
        token = torch.randint(1, 50, (batch, 1))
        ids, mask = (
            torch.cat([ids[:, 1:], token], 1),
            torch.cat([mask[:, 1:], mask[:, :1] * 0 + 1], 1),
        )
        for row in range(batch):
            if torch.rand(()) < 0.15:  # a new episode in this row
                ids[row], mask[row] = prompt()


def test_n_tokens_keeps_sampling_off_a_padded_output_layer():
    import gymnasium as gym

    from llm_gym.agents import TokenPPO

    env = gym.make("LLMCompletion-v0", max_new_tokens=4)
    n = env.action_space.n - 40
    model = TokenPPO(
        "CausalLMPolicy", env, n_steps=4, n_envs=2, seed=0, policy_kwargs={"n_tokens": n}
    )
    obs, _ = env.reset(seed=0)
    obs_t, _ = model.policy.obs_to_tensor(obs)
    probs = model.policy.get_distribution(obs_t).distribution.probs[0]
    assert probs[n:].sum().item() == 0.0
    assert probs[:n].sum().item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match=r"n_tokens must be None or in \[1, "):
        TokenPPO("CausalLMPolicy", env, n_steps=4, n_envs=2, policy_kwargs={"n_tokens": 0})
