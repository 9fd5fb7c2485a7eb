"""Reward wrappers: how a completion's reward R is assigned to its tokens.

One scheme per module: :class:`SparseReward` (R on the last token),
:class:`AttentionCredit` (ABC: the reward model's attention), :class:`UniformCredit`
(R / T), :class:`RelevanceCredit` (a known per-token relevance: the oracle), :class:`GeneratorAttentionCredit` (ABC-D: a causal LM's attention) and
:class:`PotentialShaping` (Ng-Harada-Russell shaping with a prefix potential).
:mod:`llm_gym.wrappers.vector` has the vector versions; :mod:`llm_gym.wrappers.render`
draws a completion coloured by token reward.

Token rewards contract: on the last step of every episode ``info["token_rewards"]``
holds one reward per completion token. The redistribution wrappers (sparse, ABC,
uniform, ABC-D) return the environment's own reward stream unchanged, so a
learner that ignores info still optimises the right objective, and their token
rewards sum to the episode's return R. PotentialShaping returns its shaped reward
at each step and its token rewards equal that stream (plus any inner credit).

What each wrapper needs from a custom token environment (the protocol and its
info keys are defined in :mod:`llm_gym.envs.protocol`; ``LLMCompletion-v0`` and
``TokenTree-v0`` follow it):

- every wrapper: each step appends one token and the episode's return is the
  sum of its rewards (usually R on the last step, 0 before).
- :class:`SparseReward`, :class:`UniformCredit`: nothing more. T is
  ``len(info["completion_ids"])`` when present, else the number of steps.
- :class:`AttentionCredit`: either the environment declares
  ``metadata["rm_attention"] = True`` and answers the ``"rm_attention"`` reset
  option with ``info["rm_attention"]``; or pass ``reward_model=`` and the env
  returns ``info["prompt_ids"]`` and ``info["completion_ids"]`` and has a
  ``tokenizer`` attribute (or pass ``tokenizer=``).
- :class:`RelevanceCredit`, :class:`GeneratorAttentionCredit`: ``info["prompt_ids"]``
  and ``info["completion_ids"]`` (for ABC-D in the LM's vocabulary).
- :class:`PotentialShaping`: actions are the appended token ids; the prompt comes
  from reset's ``info["prompt_ids"]`` or a ``prompt_ids`` attribute.

Wrappers write nothing onto the environment they wrap and keep no public
attribute that would hide one of its attributes from ``get_wrapper_attr``.
A missing piece raises :class:`gymnasium.error.Error` naming it.

Which compose: one redistribution wrapper per stack (an outer one replaces the
inner one's token rewards); PotentialShaping outside a redistribution wrapper
adds its shaping terms to that wrapper's token credit.
"""

from llm_gym.wrappers.attention_credit import AttentionCredit
from llm_gym.wrappers.credit import CreditWrapper, ScoreBaseline, redistribute
from llm_gym.wrappers.generator_credit import GeneratorAttentionCredit
from llm_gym.wrappers.relevance_credit import RelevanceCredit
from llm_gym.wrappers.render import credit_ansi, credit_html, credit_png
from llm_gym.wrappers.shaping import PotentialShaping, RewardModelPotential
from llm_gym.wrappers.sparse import SparseReward
from llm_gym.wrappers.uniform import UniformCredit

__all__ = [
    "AttentionCredit",
    "CreditWrapper",
    "GeneratorAttentionCredit",
    "PotentialShaping",
    "RelevanceCredit",
    "RewardModelPotential",
    "SparseReward",
    "UniformCredit",
    "credit_ansi",
    "credit_html",
    "credit_png",
    "redistribute",
    "ScoreBaseline",
]
