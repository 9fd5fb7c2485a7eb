"""Reward models: score a batch of (prompt, completion) pairs, and read attention for ABC.

Holds the interface (:class:`RewardModel`, :class:`CompletionBatch`,
:class:`RewardOutput`, :class:`AttentionRequest`), its implementations
(:class:`HFRewardModel`, :class:`FunctionRewardModel`, and :class:`RayRewardModel`,
an HFRewardModel served by Ray actors; Ray is imported only when one is made), prefix scoring
(:class:`PrefixScorer`), ABC-D credit (:class:`GeneratorAttention`) and credit
fidelity (:func:`credit_fidelity`, :class:`FidelityReport`).
"""

from llm_gym.rewards.base import AttentionRequest, CompletionBatch, RewardModel, RewardOutput
from llm_gym.rewards.credit import credit_fidelity, default_credit_maps
from llm_gym.rewards.fidelity import FidelityReport
from llm_gym.rewards.function import FunctionRewardModel
from llm_gym.rewards.generator import GeneratorAttention
from llm_gym.rewards.hf import HFRewardModel
from llm_gym.rewards.prefix import PrefixScorer
from llm_gym.rewards.ray import RayRewardModel

__all__ = [
    "AttentionRequest",
    "CompletionBatch",
    "FidelityReport",
    "FunctionRewardModel",
    "GeneratorAttention",
    "HFRewardModel",
    "PrefixScorer",
    "RayRewardModel",
    "RewardModel",
    "RewardOutput",
    "credit_fidelity",
    "default_credit_maps",
]
