"""Vector versions of the reward wrappers, with the same names as in :mod:`llm_gym.wrappers`."""

from llm_gym.wrappers.vector.credit import (
    AttentionCredit,
    SparseReward,
    UniformCredit,
    VectorCreditWrapper,
)

__all__ = ["AttentionCredit", "SparseReward", "UniformCredit", "VectorCreditWrapper"]
