"""llm-gym: reinforcement learning on language models as a Gymnasium problem.

Importing the package registers ``LLMCompletion-v0`` and ``TokenTree-v0``.
"""

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

if "LLMCompletion-v0" not in registry:
    register(
        id="LLMCompletion-v0",
        entry_point="llm_gym.envs.completion:LLMCompletionEnv",
        vector_entry_point="llm_gym.envs.completion_vector:LLMCompletionVectorEnv",
    )
if "TokenTree-v0" not in registry:
    register(id="TokenTree-v0", entry_point="llm_gym.envs.token_tree:TokenTreeEnv")

__all__ = ["__version__"]
