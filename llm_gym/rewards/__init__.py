"""Reward models: score a batch of (prompt, completion) pairs, and read attention for ABC."""

from llm_gym.rewards.base import AttentionRequest, CompletionBatch, RewardModel, RewardOutput
from llm_gym.rewards.function import FunctionRewardModel
from llm_gym.rewards.hf import HFRewardModel

__all__ = [
    "AttentionRequest",
    "CompletionBatch",
    "FunctionRewardModel",
    "HFRewardModel",
    "RewardModel",
    "RewardOutput",
]
