"""TokenPPO's value function as a compare setting: ``critic`` / ``--critic``."""

from __future__ import annotations

import pytest
import torch
from agents_world import command_line_preset, one_thread  # noqa: F401

from llm_gym.experiments.presets import ComparePreset
from llm_gym.experiments.runs import make_agent


def _trunk_gradient(critic: str) -> float:
    """Norm of the gradient a state's value puts on the LM's own weights."""
    policy = make_agent(
        "sparse", 0, ComparePreset(n_envs=2, max_new_tokens=4, critic=critic)
    ).policy
    assert policy.critic == critic
    with torch.no_grad():  # heads start with a zero last layer: give them weights to pass on
        for parameter in policy.value_net.parameters():
            parameter.fill_(0.1)
    window = {
        "input_ids": torch.tensor([[5, 6, 7, 8]]),
        "attention_mask": torch.ones(1, 4, dtype=torch.long),
    }
    policy.predict_values(window).sum().backward()
    grads = [p.grad.norm() for p in policy.lm.parameters() if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def test_shared_critic_trains_the_trunk_and_the_default_does_not():
    assert _trunk_gradient("detached") == 0.0
    assert _trunk_gradient("shared") > 0.0


def test_default_critic_builds_the_policy_as_before():
    default = make_agent("sparse", 0, ComparePreset(n_envs=2, max_new_tokens=4))
    assert default.policy.critic == "detached"
    assert isinstance(default.policy.value_net, torch.nn.Sequential)
    shared = make_agent("sparse", 0, ComparePreset(n_envs=2, max_new_tokens=4, critic="shared"))
    # same seed, same LM: only the value head differs
    for (name, a), (_, b) in zip(
        default.policy.lm.named_parameters(), shared.policy.lm.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name


def test_critic_from_the_command_line(tmp_path, monkeypatch):
    argv = ["--critic", "shared", "--out", str(tmp_path)]
    assert command_line_preset(argv, monkeypatch).critic == "shared"
    assert command_line_preset(["--out", str(tmp_path)], monkeypatch).critic == "detached"


def test_bad_critic_settings_are_named():
    with pytest.raises(
        ValueError,
        match=r"critic must be one of \('detached', 'shared', 'reward-model'\), got 'frozen'",
    ):
        ComparePreset(critic="frozen")
    with pytest.raises(
        ValueError, match=r"critic='shared' is TokenPPO's value function; agent 'rloo'"
    ):
        ComparePreset(agent="rloo", critic="shared")


def test_the_default_critic_draws_its_layers_first_to_last(monkeypatch):
    # the order draws their initial weights from torch's generator: another order would
    # change every run of every results folder
    drawn: list[int] = []
    build = torch.nn.Linear.__init__

    def record(self, *args, **kwargs):
        drawn.append(id(self))
        build(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Linear, "__init__", record)
    critic = make_agent("sparse", 0, ComparePreset(n_envs=2, max_new_tokens=4)).policy.value_net
    first, last = drawn.index(id(critic[0])), drawn.index(id(critic[2]))
    assert last == first + 1
