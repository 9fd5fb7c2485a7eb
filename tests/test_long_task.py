"""The long task: sentiment at 140-160 tokens, with its own 256-position LM and reward model."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import world_folder

import llm_gym  # noqa: F401  (registers the environments)
from llm_gym import assets
from llm_gym.assets.build.config import BuildConfig
from llm_gym.assets.build.long_task import build_long, extend_positions
from llm_gym.envs import task_policy_path
from llm_gym.experiments.methods import relevance_of, task_relevance
from llm_gym.experiments.presets import ComparePreset


def test_extended_lm_computes_the_same_on_the_first_positions():
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(assets.LM_DIR)).eval()
    longer = extend_positions(base, 256)
    assert longer.config.n_positions == 256
    ids = torch.randint(
        3,
        len(base.get_input_embeddings().weight),
        (2, 120),
        generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        torch.testing.assert_close(longer(ids).logits, base(ids).logits, rtol=0, atol=1e-5)
        # and it reads sequences past the old 128 positions
        assert longer(torch.cat([ids, ids], 1)).logits.shape == (2, 240, base.config.vocab_size)
    with pytest.raises(ValueError, match="positions must be >= the LM's 128, got 64"):
        extend_positions(base, 64)


def test_long_build_is_deterministic_and_measured(tmp_path):
    cfg = BuildConfig(
        n_reviews=200,
        held_out=50,
        rm_steps=4,
        long_lm_steps=2,
        long_rm_steps=3,
        eval_completions=4,
        n_prompts=20,
    )
    for name in ("a", "b"):
        world = tmp_path / name
        world_folder(world)
        report = build_long(world, cfg)
    for model in ("lm_long", "rm_long"):
        a, b = (tmp_path / n / model / "model.safetensors" for n in ("a", "b"))
        assert a.read_bytes() == b.read_bytes()
        assert '"n_positions": 256' in (tmp_path / "a" / model / "config.json").read_text()
    # the RM holds the LM's layers (3) and positions, and its own score head
    assert report["task"] == "long" and report["layers"] == 3 and report["rm_steps"] == 3
    assert report["lm"]["positions"] == 256 and report["lm"]["fine_tune_steps"] == 2
    # measured on the task's own lengths
    assert 140 <= report["completion_tokens_mean"] <= 160
    card = (tmp_path / "a" / "TASKS.md").read_text()
    assert (
        "| long |" in card
        and "lm_long: 256 positions, 2 fine-tuning steps on 176-token windows" in card
    )
    with pytest.raises(ValueError, match="has no tokenizer"):
        build_long(tmp_path / "empty", cfg)


def test_long_task_reads_its_own_models():
    env = gym.make("LLMCompletion-v0", task="long")
    task = env.unwrapped.task
    assert task.new_tokens == (140, 160) and task.min_new_tokens == 140
    assert task.reward_model.model.config.n_positions == 256
    assert task.max_length == 168
    env.close()
    assert task_policy_path("long") == assets.policy_path("long")
    assert task_policy_path("default") is None
    preset = ComparePreset(task="long")
    assert preset.policy_path == assets.policy_path("long")
    assert preset.reward_model_name == "long"
    # a policy the user names wins over the task's
    assert ComparePreset(task="long", policy="/some/lm").policy_path == "/some/lm"
    # sentiment: the default task's oracle map
    assert task_relevance("long") is relevance_of


def test_long_task_agent_trains_the_long_lm_and_the_default_lm_is_refused():
    from llm_gym.agents import TokenPPO
    from llm_gym.experiments.runs import make_agent

    agent = make_agent("sparse", 0, ComparePreset(task="long", methods=("sparse",), seeds=1))
    assert agent.policy.lm.config.n_positions == 256
    assert agent.n_steps == 160
    env = gym.make("LLMCompletion-v0", task="long")
    with pytest.raises(ValueError, match="observations hold up to 168 tokens .* has 128 positions"):
        TokenPPO("CausalLMPolicy", env, n_steps=8, batch_size=8)
    env.close()


def test_long_task_episode_runs_to_its_length():
    from llm_gym.agents import sample_completions

    infos = sample_completions(task_policy_path("long"), 2, seed=0, task="long", device="cpu")
    lengths = [len(info["completion_ids"]) for info in infos]
    assert all(140 <= n <= 160 for n in lengths)
    assert all(np.isfinite(info["score"]) for info in infos)
