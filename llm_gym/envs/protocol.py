"""The token-environment protocol: what an environment returns when an episode ends.

Every environment of llm-gym, every reward wrapper and every agent reads the same
keys, defined here once. A custom token environment gets the reward wrappers by
following it.

Episode info. On the last step of every episode ``info`` holds (:class:`EpisodeInfo`):

- ``"token_rewards"`` (:data:`TOKEN_REWARDS`): one float per completion token. The
  authority for learners that assign credit per token. A bare environment puts 0.0
  on every token and the score R on the last; a redistribution wrapper replaces it
  with its credit (summing to the episode's return); potential shaping adds its
  shaping terms.
- ``"prompt_ids"``, ``"completion_ids"`` (:data:`PROMPT_IDS`, :data:`COMPLETION_IDS`):
  the episode's token ids (lists of int). Needed by the wrappers that read the
  tokens (ABC-D, the relevance oracle, ABC with ``reward_model=``); T is
  ``len(completion_ids)`` when present, else the number of steps.
- ``"score"`` (:data:`SCORE`): the reward model's score R of the finished completion.
  Its absence on a truncated episode tells wrappers the environment did not score it.
- ``"text"`` (:data:`TEXT`): the decoded completion.
- ``"credit_map"`` (:data:`CREDIT_MAP`): put there by redistribution wrappers: the
  effective per-token weights m (summing to 1) with which they spread the score,
  ``token_rewards = m * (R - b) + b * [t == T]`` for their baseline b. Group agents
  use it to spread a group deviation instead (group-centred credit).
- ``"group"``, ``"group_episode"`` (:data:`GROUP`, :data:`GROUP_EPISODE`): in a vector
  environment whose sub-environments come in groups sharing prompts (RLOO, GRPO):
  the group, and which of its episodes this completion belongs to. Completions
  with equal keys are completions of the same prompt. A custom vector environment
  offers groups by putting these two keys in its episode-end infos.
- ``"rm_attention"`` (:data:`RM_ATTENTION`): only when asked for at reset (below): a
  dict from :attr:`~llm_gym.rewards.AttentionRequest.key` to the reward model's
  attention weights over the completion tokens (one per token, summing to 1),
  read in the forward that computed the score.

Reset info holds ``"prompt_ids"`` when the environment can give it then (for
potential shaping, which needs the prompt before the first step), and the group
keys in grouped vector environments.

Asking for attention. A credit wrapper that reads the reward model's attention
(:class:`~llm_gym.wrappers.AttentionCredit`) asks for it through reset's options:
``env.reset(options={"rm_attention": (request, ...)})`` (:data:`ATTENTION_OPTION`),
adding its :class:`~llm_gym.rewards.AttentionRequest` to whatever the outer
wrappers asked for. The environment then returns ``info["rm_attention"]`` for that
episode, one entry per distinct request. The request travels with the call that
starts the episode, the way data flows, so a wrapper never writes onto the
environment it wraps, and two credit wrappers over one environment each get their
own weights. A vector environment applies the requests of its last ``reset`` call
to the episodes it starts by itself (autoreset). An environment declares that it
can answer with ``metadata["rm_attention"] = True`` (:data:`ATTENTION_METADATA`);
wrappers check it at construction.

Example:
    >>> import gymnasium as gym, llm_gym
    >>> from llm_gym.rewards import AttentionRequest
    >>> env = gym.make("LLMCompletion-v0", max_new_tokens=3)
    >>> env.metadata[ATTENTION_METADATA]
    True
    >>> request = AttentionRequest()
    >>> _ = env.reset(seed=0, options={ATTENTION_OPTION: (request,)})
    >>> for _ in range(3):
    ...     _, reward, terminated, _, info = env.step(env.action_space.sample())
    >>> len(info[RM_ATTENTION][request.key]), round(sum(info[RM_ATTENTION][request.key]), 6)
    (3, 1.0)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypedDict

from llm_gym.rewards import AttentionRequest

__all__ = [
    "ATTENTION_METADATA",
    "ATTENTION_OPTION",
    "COMPLETION_IDS",
    "CREDIT_MAP",
    "GROUP",
    "GROUP_EPISODE",
    "PROMPT_IDS",
    "RM_ATTENTION",
    "SCORE",
    "TEXT",
    "TOKEN_REWARDS",
    "EpisodeInfo",
    "attention_requests",
    "warn_unscored",
    "with_attention_request",
]

#: info key: one float per completion token (the per-token rewards)
TOKEN_REWARDS: Final = "token_rewards"
#: info key: the episode's prompt token ids
PROMPT_IDS: Final = "prompt_ids"
#: info key: the episode's completion token ids
COMPLETION_IDS: Final = "completion_ids"
#: info key: the reward model's score R of the finished completion
SCORE: Final = "score"
#: info key: the decoded completion
TEXT: Final = "text"
#: info key: the reward model's attention over the completion, per request
RM_ATTENTION: Final = "rm_attention"
#: info key: the per-token weights a redistribution wrapper spread the score with
CREDIT_MAP: Final = "credit_map"
#: info key: the prompt group of a completion in a grouped vector environment
GROUP: Final = "group"
#: info key: which of its group's episodes a completion belongs to
GROUP_EPISODE: Final = "group_episode"
#: reset option: the attention requests for the episode being started
ATTENTION_OPTION: Final = "rm_attention"
#: metadata flag: the environment answers attention requests
ATTENTION_METADATA: Final = "rm_attention"


class EpisodeInfo(TypedDict, total=False):
    """The last step's info of an episode (every key optional for custom environments)."""

    token_rewards: list[float]
    prompt_ids: list[int]
    completion_ids: list[int]
    score: float
    text: str
    credit_map: list[float]
    group: int
    group_episode: int
    rm_attention: dict[str, list[float]]


def attention_requests(options: Mapping[str, Any] | None) -> tuple[AttentionRequest, ...]:
    """The distinct attention requests in reset ``options``, in order; checks their type.

    >>> attention_requests({"rm_attention": (AttentionRequest(), AttentionRequest())})
    (AttentionRequest(layers=(-1,), heads='mean', rollout=False),)
    >>> attention_requests(None)
    ()
    """
    if not options or ATTENTION_OPTION not in options:
        return ()
    requests = options[ATTENTION_OPTION]
    if isinstance(requests, AttentionRequest):
        requests = (requests,)
    if not isinstance(requests, Sequence) or not all(
        isinstance(r, AttentionRequest) for r in requests
    ):
        raise TypeError(
            f"options[{ATTENTION_OPTION!r}] must be a sequence of AttentionRequest, got {requests!r}"
        )
    return tuple(dict.fromkeys(requests))


def with_attention_request(
    options: Mapping[str, Any] | None, request: AttentionRequest
) -> dict[str, Any]:
    """A copy of reset ``options`` that also asks for ``request`` (the caller's dict is kept).

    >>> with_attention_request({"prompt": "the film"}, AttentionRequest())
    {'prompt': 'the film', 'rm_attention': (AttentionRequest(layers=(-1,), heads='mean', rollout=False),)}
    """
    merged = dict(options or {})
    merged[ATTENTION_OPTION] = (*attention_requests(options), request)
    return merged


def warn_unscored(source: str) -> None:
    """Warn that an episode was cut (``truncated``) before the environment scored it.

    Its return is only what the environment streamed before the cut (0 for
    ``LLMCompletion-v0``). Python shows the warning once per place it is raised.
    """
    warnings.warn(
        f"{source}: an episode was truncated by an outer time limit before the environment "
        "scored it, so its return is only what the environment streamed (0 for "
        "LLMCompletion-v0); give the limit to the environment instead "
        "(gym.make(..., max_episode_steps=n)), which scores cut completions",
        stacklevel=3,
    )
