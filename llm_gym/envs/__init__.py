"""Token-level environments: the completion env, its native vector env, small exact envs."""

from llm_gym.envs.completion import LLMCompletionEnv
from llm_gym.envs.completion_vector import LLMCompletionVectorEnv
from llm_gym.envs.task import TASK_PRESETS, CompletionTask, make_task, task_policy_path
from llm_gym.envs.token_tree import TokenTreeEnv

__all__ = [
    "TASK_PRESETS",
    "CompletionTask",
    "LLMCompletionEnv",
    "LLMCompletionVectorEnv",
    "TokenTreeEnv",
    "make_task",
    "task_policy_path",
]
