"""The embedded default world: tokenizer, tiny LM, tiny reward models, prompts, lexicon.

Everything here is loaded from files inside the package; nothing is downloaded.
``llm-gym build-assets`` rebuilds them (see :mod:`llm_gym.assets.build`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "ASSET_DIR",
    "LM_DIR",
    "POLICIES",
    "PROMPT_SETS",
    "REWARD_MODELS",
    "TOKENIZER_DIR",
    "load_prompts",
    "policy_path",
    "reward_model_path",
    "token_relevance",
    "token_valence",
]

#: the folder of the embedded world, inside the installed package
ASSET_DIR = Path(__file__).resolve().parent
#: the embedded word-level tokenizer (``AutoTokenizer.from_pretrained(TOKENIZER_DIR)``)
TOKENIZER_DIR = ASSET_DIR / "tokenizer"
#: the embedded 3-layer GPT-2 policy and reference LM
LM_DIR = ASSET_DIR / "lm"
#: bundled causal LMs (policy and KL reference): name -> folder; "long": 256 positions
POLICIES = {"default": "lm", "long": "lm_long"}
#: bundled reward models: name -> folder
REWARD_MODELS = {
    "default": "rm_default",
    "deep": "rm_deep",
    # the credit-benchmark tasks' own (llm_gym.assets.rules, TASKS.md)
    "decisive": "rm_decisive",
    "diffuse": "rm_diffuse",
    "interaction": "rm_interaction",
    # the long task's sentiment RM, with 256 positions
    "long": "rm_long",
}
#: bundled prompt sets: name -> file (openings: the review openings that name no character)
PROMPT_SETS = {"reviews": "prompts_reviews.json", "openings": "prompts_openings.json"}


def reward_model_path(name: str = "default") -> str:
    """Folder of a bundled reward model.

    ``"default"``: the sentiment RM with a faithful last layer; ``"deep"``: a sentiment
    RM whose last layer is not; ``"decisive"``, ``"diffuse"``, ``"interaction"``: the
    credit-benchmark tasks' RMs, each trained on its task's rule; ``"long"``: the
    sentiment RM of the 140-160-token task, with 256 positions.
    """
    if name not in REWARD_MODELS:
        raise ValueError(
            f"no bundled reward model {name!r}; expected one of {sorted(REWARD_MODELS)}"
        )
    return str(ASSET_DIR / REWARD_MODELS[name])


def policy_path(name: str = "default") -> str:
    """Folder of a bundled causal LM: ``"default"`` (128 positions) or ``"long"`` (256).

    >>> Path(policy_path("long")).name
    'lm_long'
    """
    if name not in POLICIES:
        raise ValueError(f"no bundled policy {name!r}; expected one of {sorted(POLICIES)}")
    return str(ASSET_DIR / POLICIES[name])


def load_prompts(name: str = "reviews") -> list[str]:
    """A bundled prompt set: held-out review openings of 2-8 tokens (``"openings"``: those
    that name no character)."""
    if name not in PROMPT_SETS:
        raise ValueError(f"no bundled prompt set {name!r}; expected one of {sorted(PROMPT_SETS)}")
    return json.loads((ASSET_DIR / PROMPT_SETS[name]).read_text())


@lru_cache(maxsize=1)
def _vocab_valence() -> np.ndarray:
    return np.asarray(json.loads((ASSET_DIR / "token_valence.json").read_text()), dtype=np.float64)


def token_valence(token_ids: np.ndarray | list[int]) -> np.ndarray:
    """VADER lexicon valence of each token of the embedded tokenizer (0 for neutral tokens)."""
    return _vocab_valence()[np.asarray(token_ids, dtype=np.int64)]


def token_relevance(token_ids: np.ndarray | list[int]) -> np.ndarray:
    """Ground-truth relevance of each token to the score: its absolute lexicon valence.

    This is the oracle credit map of the embedded world and the reference for
    credit-fidelity measurements.
    """
    return np.abs(token_valence(token_ids))
