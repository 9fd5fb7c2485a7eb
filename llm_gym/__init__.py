"""llm-gym: reinforcement learning on language models as a Gymnasium problem.

Importing the package registers ``LLMCompletion-v0``.
"""

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

if "LLMCompletion-v0" not in registry:
    register(
        id="LLMCompletion-v0",
        entry_point="llm_gym.envs.completion:LLMCompletionEnv",
        vector_entry_point="llm_gym.envs.completion_vector:LLMCompletionVectorEnv",
    )

__all__ = ["__version__"]
