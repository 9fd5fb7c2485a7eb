"""Build the embedded default world: corpus, tokenizer, tiny LM, tiny reward models, prompts.

Offline tooling, not imported by the environments: run ``llm-gym build-assets``
(or ``python -m llm_gym.assets.build``). The build is deterministic for a seed:
the corpus, tokenizer, prompts and relevance table are identical bit for bit;
model weights are identical bit for bit on the same torch version and thread
count (the build fixes 1 thread), and otherwise agree to float tolerance. The
last build took 24.2 minutes on a shared 2-core machine (MODEL_CARD.md), and it
fails when the default reward model's last-layer attention is not faithful (see :data:`FIDELITY_BAR`).

Its steps, one module each:

- :mod:`~llm_gym.assets.build.config`: :class:`BuildConfig`, :data:`FIDELITY_BAR`.
- :mod:`~llm_gym.assets.build.corpus`: the generated corpus, its word-level
  tokenizer, token streams, prompts, the valence table, VADER's scores.
- :mod:`~llm_gym.assets.build.training`: the LM and the reward models.
- :mod:`~llm_gym.assets.build.measurement`: perplexity, the LM's completions
  (from :func:`llm_gym.agents.sample_completions`), each reward model's Pearson
  with VADER and its credit fidelity (from the reference ABC read-out
  :func:`llm_gym.rewards.attention.reference_attention`).
- :mod:`~llm_gym.assets.build.model_card`: MODEL_CARD.md from the measured report.
- :mod:`~llm_gym.assets.build.pipeline`: :func:`build_world` (the steps in order)
  and :func:`main`.
- :mod:`~llm_gym.assets.build.tasks` and :mod:`~llm_gym.assets.build.long_task`:
  the credit-benchmark tasks' own models, each built alone (``--task NAME``) from
  a built world, which they read and do not rewrite.
"""

from llm_gym.assets.build.config import FIDELITY_BAR, BuildConfig
from llm_gym.assets.build.corpus import SCORE_SCALE, SPECIAL_TOKENS, build_tokenizer
from llm_gym.assets.build.pipeline import build_world, main
from llm_gym.assets.build.training import train_lm, train_rm

__all__ = [
    "FIDELITY_BAR",
    "SCORE_SCALE",
    "SPECIAL_TOKENS",
    "BuildConfig",
    "build_tokenizer",
    "build_world",
    "main",
    "train_lm",
    "train_rm",
]
