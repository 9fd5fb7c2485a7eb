"""SB3 ``VecEnv`` s for token environments.

Holds :class:`GymnasiumVecEnv` (an SB3 ``VecEnv`` over a Gymnasium ``VectorEnv``
such as ``gym.make_vec("LLMCompletion-v0")``), :func:`make_token_vec_env` (copies
of one token environment) and :func:`as_token_vec_env` (what the token agents
accept, as an SB3 ``VecEnv``). stable-baselines3 does not accept Gymnasium
vector environments: it resets finished sub-environments in the same step,
returns a list of info dicts and puts the last observation in
``info["terminal_observation"]``. The native LLMCompletion vector env scores every
episode ending in a step with one batched reward-model forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.vector import DictInfoToList
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

__all__ = ["GymnasiumVecEnv", "as_token_vec_env", "make_token_vec_env"]


class GymnasiumVecEnv(VecEnv):
    """Present a Gymnasium ``VectorEnv`` with ``NEXT_STEP`` autoreset as an SB3 ``VecEnv``.

    Sub-environments that end are reset at once through ``reset(options={"reset_mask": ...})``,
    so the vector env must support a reset mask (``LLMCompletionVectorEnv`` does).

    Args:
        env: the Gymnasium vector environment.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> venv = GymnasiumVecEnv(gym.make_vec("LLMCompletion-v0", num_envs=2, max_new_tokens=2))
        >>> obs = venv.reset()
        >>> obs, rewards, dones, infos = venv.step(np.array([5, 6]))
        >>> obs, rewards, dones, infos = venv.step(np.array([5, 6]))
        >>> bool(dones.all()), "terminal_observation" in infos[0]
        (True, True)
    """

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode != AutoresetMode.NEXT_STEP:
            raise ValueError(f"expected a vector env with AutoresetMode.NEXT_STEP, got {mode}")
        self.env = env
        self._listed = DictInfoToList(env)  # SB3 wants one info dict per environment
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions: np.ndarray | None = None
        self._seed: int | None = None

    def reset(self) -> Any:
        obs, self.reset_infos = self._listed.reset(seed=self._seed)
        self._seed = None
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, info_list = self._listed.step(self._actions)
        dones = np.logical_or(terminated, truncated)
        if dones.any():
            for i in np.flatnonzero(dones):
                info_list[i]["terminal_observation"] = {k: v[i] for k, v in obs.items()}
                info_list[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            obs, reset_infos = self._listed.reset(options={"reset_mask": dones})
            for i in np.flatnonzero(dones):
                self.reset_infos[i] = reset_infos[i]
        return obs, np.asarray(rewards, dtype=np.float32), dones, info_list

    def close(self) -> None:
        self.env.close()

    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        self._seed = seed
        return [None if seed is None else seed + i for i in range(self.num_envs)]

    def _targets(self, indices: VecEnvIndices) -> list[Any]:
        envs = getattr(self.env.unwrapped, "envs", None)
        if envs is None:
            raise AttributeError(f"{type(self.env).__name__} does not expose its sub-environments")
        return [envs[i] for i in self._get_indices(indices)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [env.get_wrapper_attr(attr_name) for env in self._targets(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for env in self._targets(indices):
            setattr(env, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        return [
            getattr(env, method_name)(*method_args, **method_kwargs)
            for env in self._targets(indices)
        ]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def as_token_vec_env(
    env: gym.Env | gym.vector.VectorEnv | VecEnv | str | None,
    n_envs: int,
    env_factory: Callable[[], gym.Env] | None = None,
) -> VecEnv | None:
    """What TokenPPO-style constructors accept, as an SB3 VecEnv: a Gymnasium VectorEnv
    through the adapter, an SB3 VecEnv (or None) as it is, else ``n_envs`` copies."""
    if isinstance(env, gym.vector.VectorEnv):
        return GymnasiumVecEnv(env)
    if env is None or isinstance(env, VecEnv):
        return env
    return make_token_vec_env(env, n_envs, env_factory)


def make_token_vec_env(
    env: gym.Env | str, n_envs: int, env_factory: Callable[[], gym.Env] | None = None
) -> VecEnv:
    """An SB3 ``DummyVecEnv`` of ``n_envs`` copies of a token environment.

    Copies come from ``env_factory`` when given, else from ``gym.make(env.spec)``
    (wrappers that inherit ``RecordConstructorArgs`` are recreated). Copies of an
    ``LLMCompletion`` env share its tokenizer and reward model.

    Example:
        >>> import gymnasium as gym, llm_gym
        >>> make_token_vec_env(gym.make("LLMCompletion-v0"), 3).num_envs
        3
    """
    if isinstance(env, str):
        env = gym.make(env)
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    if env_factory is not None:
        return DummyVecEnv([lambda: env] + [env_factory] * (n_envs - 1))
    if n_envs > 1 and env.spec is None:
        raise ValueError(
            f"cannot copy {env} into {n_envs} environments: it has no spec; pass env_factory "
            "(a function returning a new environment) or an SB3 VecEnv"
        )
    task = getattr(env.unwrapped, "task", None)
    shared = {"completion_task": task} if task is not None else {}
    # the copies exist only when n_envs > 1, and then env has a spec (checked above)
    return DummyVecEnv(
        [lambda: env]
        + [lambda: gym.make(cast(gym.envs.registration.EnvSpec, env.spec), **shared)] * (n_envs - 1)
    )
