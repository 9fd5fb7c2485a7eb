"""Reward models: score a batch of (prompt, completion) pairs, and read attention for ABC."""

from llm_gym.rewards.base import AttentionRequest, CompletionBatch, RewardModel, RewardOutput
from llm_gym.rewards.credit import credit_fidelity, default_credit_maps
from llm_gym.rewards.fidelity import FidelityReport
from llm_gym.rewards.function import FunctionRewardModel
from llm_gym.rewards.generator import GeneratorAttention
from llm_gym.rewards.hf import HFRewardModel

__all__ = [
    "AttentionRequest",
    "CompletionBatch",
    "FidelityReport",
    "FunctionRewardModel",
    "GeneratorAttention",
    "HFRewardModel",
    "RewardModel",
    "RewardOutput",
    "credit_fidelity",
    "default_credit_maps",
]
