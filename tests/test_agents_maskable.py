"""TokenMaskablePPO: reference top-k / top-p masks, recomputed rather than stored."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from agents_world import make_env, one_thread  # noqa: F401
from stable_baselines3.common.utils import obs_as_tensor

from llm_gym.agents import TokenMaskablePPO, top_k_top_p_mask


def test_top_k_top_p_mask():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert top_k_top_p_mask(logits, 2, None).tolist() == [[True, True, False, False]]
    assert top_k_top_p_mask(logits, None, 0.6).tolist() == [[True, True, False, False]]
    assert top_k_top_p_mask(logits, None, 0.1).tolist() == [[True, False, False, False]]


def test_masked_ppo_samples_only_reference_top_k_and_stores_no_masks():
    env = make_env(max_new_tokens=4)
    model = TokenMaskablePPO(
        "CausalLMPolicy",
        env,
        n_steps=4,
        batch_size=8,
        n_envs=2,
        seed=0,
        policy_kwargs={"mask_top_k": 3},
        learning_rate=1e-3,
    )
    model.learn(4 * 2 * 2)
    buffer = model.rollout_buffer
    assert buffer.action_masks.nbytes == 0  # stock MaskablePPO: 4 * vocab bytes per transition
    observations = {k: v.reshape(-1, v.shape[-1]) for k, v in buffer.observations.items()}
    obs = obs_as_tensor(observations, "cpu")
    allowed = model.policy.reference_mask(obs)
    actions = torch.as_tensor(buffer.actions.reshape(-1)).long()
    assert bool(allowed.gather(1, actions[:, None]).all())
    assert int(allowed.sum(1).max()) == 3
    with pytest.raises(ValueError, match="use_masking=True"):
        model.learn(8, use_masking=True)
    assert np.isfinite(model.kl.coef)
