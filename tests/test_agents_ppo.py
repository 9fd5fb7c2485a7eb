"""TokenPPO: per-token credit before GAE, credit across rollouts, KL, save/load."""

from __future__ import annotations

import numpy as np
import torch
from agents_world import UniformCredit, make_env, one_thread  # noqa: F401
from stable_baselines3.common.callbacks import BaseCallback

from llm_gym.agents import KLController, TokenPPO


class Recorder(BaseCallback):
    """Stored rewards of every rollout (after TokenPPO's own callback ran) and episode scores."""

    def __init__(self) -> None:
        super().__init__()
        self.rewards: list[np.ndarray] = []
        self.scores: list[float] = []

    def _on_step(self) -> bool:
        self.scores += [info["score"] for info in self.locals["infos"] if "score" in info]
        return True

    def _on_rollout_end(self) -> None:
        self.rewards.append(self.model.rollout_buffer.rewards.copy())
        self.logged = dict(self.logger.name_to_value)


def test_token_rewards_reach_the_buffer_and_no_credit_is_lost_across_rollouts():
    # horizon 3, rollouts of 4 steps: most episodes span two rollouts
    env = UniformCredit(make_env(max_new_tokens=3))
    model = TokenPPO(
        "CausalLMPolicy",
        env,
        n_steps=4,
        batch_size=8,
        n_epochs=1,
        n_envs=2,
        kl_coef=0.0,
        kl_target=None,
        seed=0,
    )
    assert model.ref_lm is None
    recorder = Recorder()
    model.learn(4 * 2 * 6, callback=recorder)
    stored = np.concatenate(recorder.rewards)
    # every finished episode's score is in the stored rewards, once
    np.testing.assert_allclose(stored.sum(), sum(recorder.scores), rtol=1e-5, atol=1e-5)
    # dense, not sparse: more non-zero rewards than finished episodes
    assert np.count_nonzero(stored) > len(recorder.scores)


def test_episodes_inside_one_rollout_get_their_exact_token_rewards():
    env = UniformCredit(make_env(max_new_tokens=4, eos_ends_episode=False))
    model = TokenPPO(
        "CausalLMPolicy",
        env,
        n_steps=8,
        batch_size=8,
        n_epochs=1,
        n_envs=2,
        kl_coef=0.0,
        kl_target=None,
        seed=1,
    )
    recorder = Recorder()
    model.learn(8 * 2, callback=recorder)
    rewards = recorder.rewards[0]  # (8 steps, 2 envs): two whole episodes per env
    per_episode = rewards.reshape(2, 4, 2)
    np.testing.assert_allclose(per_episode, per_episode[:, :1, :].repeat(4, 1), atol=1e-6)
    np.testing.assert_allclose(
        np.sort(per_episode.sum(1).ravel()), np.sort(recorder.scores), atol=1e-5
    )


def test_kl_penalty_is_logged_and_the_controller_adapts_within_its_cap():
    env = make_env(max_new_tokens=4)
    model = TokenPPO(
        "CausalLMPolicy",
        env,
        n_steps=4,
        batch_size=8,
        n_envs=2,
        seed=0,
        kl_coef=0.2,
        kl_target=0.01,
        kl_horizon=8,
        kl_coef_max=0.3,
    )
    recorder = Recorder()
    model.learn(4 * 2 * 4, callback=recorder)
    assert model.ref_lm is not None
    assert 0 < model.kl.coef <= 0.3
    assert recorder.logged["rollout/kl_coef"] > 0
    for key in ["kl_per_completion", "entropy_per_token", "score_mean", "distinct_token_ratio"]:
        assert f"rollout/{key}" in recorder.logged
    controller = KLController(0.1, target=None)
    assert controller.update(kl=100.0, steps=10_000) == 0.1


def test_save_load_round_trip_gives_the_same_actions(tmp_path):
    env = make_env(max_new_tokens=4)
    model = TokenPPO(
        "CausalLMPolicy", env, n_steps=4, batch_size=8, n_envs=2, seed=0, learning_rate=1e-3
    )
    model.learn(16)
    model.save(tmp_path / "model")
    loaded = TokenPPO.load(tmp_path / "model")
    assert loaded.kl.coef == model.kl.coef
    assert loaded.policy.model_name == model.policy.model_name
    obs, _ = env.reset(seed=3)
    batch = {k: np.repeat(v[None], 16, 0) for k, v in obs.items()}
    actions = []
    for m in (model, loaded):
        torch.manual_seed(7)
        actions.append(m.predict(batch, deterministic=False)[0])
    np.testing.assert_array_equal(actions[0], actions[1])
    for (name, a), b in zip(
        model.policy.state_dict().items(), loaded.policy.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_env_copies_keep_the_wrapper_stack_and_share_the_reward_model():
    env = UniformCredit(make_env())
    model = TokenPPO("CausalLMPolicy", env, n_envs=3, n_steps=4, batch_size=12)
    envs = model.get_env().envs
    assert all(isinstance(e, UniformCredit) for e in envs)
    assert len({id(e.unwrapped.reward_model) for e in envs}) == 1


def test_attention_credit_wrapper_stack_feeds_dense_rewards():
    from llm_gym.wrappers import AttentionCredit

    env = AttentionCredit(make_env(max_new_tokens=4, eos_ends_episode=False), beta=0.8)
    model = TokenPPO(
        "CausalLMPolicy",
        env,
        n_steps=4,
        batch_size=8,
        n_envs=2,
        n_epochs=1,
        seed=0,
        kl_coef=0.0,
        kl_target=None,
    )
    assert all(isinstance(e, AttentionCredit) for e in model.get_env().envs)
    recorder = Recorder()
    model.learn(8, callback=recorder)
    rewards = recorder.rewards[0]
    np.testing.assert_allclose(rewards.sum(0), recorder.scores, rtol=1e-4, atol=1e-5)
    assert np.count_nonzero(rewards) > 2


class KLRecorder(BaseCallback):
    """Per rollout: the penalty each stored transition got, and an independent per-step KL.

    The independent KL reads every stored window through full forwards of the policy
    LM (with its temperature) and of the reference LM, one step at a time, before the
    update changes the weights.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rewards: list[np.ndarray] = []
        self.penalties: list[np.ndarray] = []
        self.expected: list[np.ndarray] = []

    def _on_step(self) -> bool:
        # runs after TokenPPO's callback: the environment's reward, before any KL penalty
        self.rewards.append(self.locals["rewards"].astype(np.float64))
        return True

    @torch.no_grad()
    def _on_rollout_end(self) -> None:
        from llm_gym.agents.decoding import position_ids_from_mask

        buffer, policy = self.model.rollout_buffer, self.model.policy
        streamed = np.stack(self.rewards[-buffer.buffer_size :])
        self.penalties.append(streamed - buffer.rewards)
        expected = np.zeros_like(buffer.rewards, dtype=np.float64)
        for t in range(buffer.buffer_size):
            ids = torch.as_tensor(buffer.observations["input_ids"][t]).long()
            mask = torch.as_tensor(buffer.observations["attention_mask"][t]).long()
            actions = torch.as_tensor(buffer.actions[t, :, 0]).long()[:, None]
            position_ids = position_ids_from_mask(mask)
            log_probs = []
            for lm, temperature in [(policy.lm, policy.temperature), (self.model.ref_lm, 1.0)]:
                logits = lm(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
                log_p = torch.log_softmax(logits[:, -1].double() / temperature, -1)
                log_probs.append(log_p.gather(1, actions).squeeze(1))
            expected[t] = (self.model.kl.coef * (log_probs[0] - log_probs[1])).numpy()
        self.expected.append(expected)


def test_kl_penalty_per_transition_equals_a_per_step_full_forward_computation():
    # episodes of up to 4 tokens (EOS may end them earlier) in rollouts of 6 steps:
    # they span rollouts; the policy samples at temperature 0.8 and learns, so the KL to
    # the (untempered, frozen) reference is not zero
    env = make_env(max_new_tokens=4)
    model = TokenPPO(
        "CausalLMPolicy",
        env,
        n_steps=6,
        batch_size=12,
        n_epochs=1,
        n_envs=2,
        seed=0,
        learning_rate=1e-3,
        kl_coef=0.3,
        kl_target=None,
        policy_kwargs={"temperature": 0.8},
    )
    recorder = KLRecorder()
    model.learn(6 * 2 * 3, callback=recorder)
    assert len(recorder.penalties) == 3
    for penalties, expected in zip(recorder.penalties, recorder.expected, strict=True):
        np.testing.assert_allclose(penalties, expected, rtol=0, atol=1e-5)
    assert np.abs(np.stack(recorder.expected)).max() > 1e-2
    kl = model.last_kl
    np.testing.assert_allclose(0.3 * kl, recorder.expected[-1], rtol=0, atol=1e-5)
