"""Shared settings of the agents tests: a small LLMCompletion-v0 world."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import llm_gym  # noqa: F401  (registers the environments)


def make_env(max_new_tokens: int = 4, **kwargs: Any) -> gym.Env:
    """The embedded default world with short completions."""
    return gym.make("LLMCompletion-v0", max_new_tokens=max_new_tokens, **kwargs)


class UniformCredit(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Test double of a redistributing reward wrapper: R / T on every token at episode end."""

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            n = len(info["completion_ids"])
            info["token_rewards"] = list(np.full(n, info["score"] / n))
        return obs, reward, terminated, truncated, info


@pytest.fixture(autouse=True)
def one_thread():
    """Run on one torch thread: the models are tiny, and a second thread contending with
    other work on a 2-core machine made updates several times slower in our measurements."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def command_line_preset(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The preset ``llm-gym compare`` would run with ``argv`` (stopped before training)."""
    import llm_gym.experiments.compare as compare
    from llm_gym.cli import main as cli_main

    seen: list[Any] = []

    def record(preset, out, **kwargs):
        seen.append(preset)
        raise SystemExit(0)

    monkeypatch.setattr(compare, "run_compare", record)
    with pytest.raises(SystemExit):
        cli_main(["compare", *argv])
    assert len(seen) == 1
    return seen[0]
