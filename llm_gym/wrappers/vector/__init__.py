"""Vector versions of the reward wrappers, with the same names as in :mod:`llm_gym.wrappers`."""

from llm_gym.wrappers.vector.credit import (
    AttentionCredit,
    RelevanceCredit,
    SparseReward,
    UniformCredit,
    VectorCreditWrapper,
)
from llm_gym.wrappers.vector.shaping import PotentialShaping

__all__ = [
    "AttentionCredit",
    "PotentialShaping",
    "RelevanceCredit",
    "SparseReward",
    "UniformCredit",
    "VectorCreditWrapper",
]
