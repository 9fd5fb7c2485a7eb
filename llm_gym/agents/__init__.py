"""Agents for token environments on stable-baselines3 and sb3-contrib.

- :class:`CausalLMPolicy`: a pretrained causal LM as an actor-critic policy.
- :class:`TokenPPO`: PPO with per-token credit, KV-cached rollouts and a KL penalty.
- :class:`RewardModelCritic`: a value function that starts as the reward model
  (``policy_kwargs={"critic": "reward-model", "critic_model": ...}``).
- :class:`TokenMaskablePPO`: the same on sb3-contrib's MaskablePPO, with top-k /
  top-p masks from the reference model.
- :class:`TokenRLOO`, :class:`TokenGRPO`: critic-free group algorithms (several
  completions per prompt) with token-level credit.
- :class:`TokenRewardCallback`: per-token credit for stock on-policy algorithms.
"""

from llm_gym.agents.buffers import EpisodeRolloutBuffer, TokenCreditBuffer, TokenRolloutBuffer
from llm_gym.agents.callbacks import TokenRewardCallback
from llm_gym.agents.decoding import IncrementalDecoder
from llm_gym.agents.evaluation import evaluate_completions, sample_completions
from llm_gym.agents.group import TokenGRPO, TokenRLOO
from llm_gym.agents.kl import KLController, PIDKLController
from llm_gym.agents.maskable import MaskableCausalLMPolicy, TokenMaskablePPO, top_k_top_p_mask
from llm_gym.agents.policy import CausalLMPolicy
from llm_gym.agents.ppo import TokenPPO
from llm_gym.agents.reward_model_critic import RewardModelCritic
from llm_gym.agents.vec_env import GymnasiumVecEnv, make_token_vec_env

__all__ = [
    "CausalLMPolicy",
    "EpisodeRolloutBuffer",
    "GymnasiumVecEnv",
    "IncrementalDecoder",
    "KLController",
    "MaskableCausalLMPolicy",
    "PIDKLController",
    "RewardModelCritic",
    "TokenMaskablePPO",
    "TokenCreditBuffer",
    "TokenGRPO",
    "TokenPPO",
    "TokenRLOO",
    "TokenRewardCallback",
    "TokenRolloutBuffer",
    "evaluate_completions",
    "make_token_vec_env",
    "sample_completions",
    "top_k_top_p_mask",
]
