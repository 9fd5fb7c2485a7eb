"""The scoring rules of the credit-benchmark tasks: a score per text and its per-word truth.

Each rule scores a text of the embedded world (lower-case words separated by single
spaces, ``<eos>`` a word of its own) and splits that score exactly into one signed
term per word, so every task has a known per-token credit. The reward model of a
task is trained on its rule's scores (``llm-gym build-assets --task NAME``); the
rule's terms are the task's signed oracle and their magnitudes its oracle credit map.

The rules differ in their credit structure:

- :class:`ProtagonistRule` (task ``decisive``): one early token decides the score.
- :class:`ShortWordsRule` (task ``diffuse``): every token carries the same small share.
- :class:`FittingPlaceRule` (task ``interaction``): credit belongs to pairs of tokens,
  a character and a place of the text; neither decides alone.

Holds :class:`WorldRule` and the three rules, :data:`RULES` (name -> rule),
:func:`rule_words` (the words of token ids of the embedded tokenizer) and
:data:`CHARACTER_WORDS`, :data:`PLACE_DOMAINS`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "CHARACTER_WORDS",
    "PLACE_DOMAINS",
    "RULES",
    "FittingPlaceRule",
    "ProtagonistRule",
    "ShortWordsRule",
    "WorldRule",
    "rule_words",
]

#: the head word of each character of the corpus grammar, with whether it names a profession
CHARACTER_WORDS: dict[str, bool] = {
    **{
        w: True
        for w in (
            "detective teacher farmer pilot sailor painter doctor nurse student writer singer "
            "soldier baker lawyer reporter chef driver"
        ).split()
    },
    **{w: False for w in "brothers sisters man woman family boy girl mother father".split()},
}

#: the domain of each place word and of each profession that belongs to one
PLACE_DOMAINS: dict[str, dict[str, str]] = {
    "places": {
        **dict.fromkeys(["school", "hospital"], "care"),
        **dict.fromkeys(["farm", "mountains", "desert", "village", "garden", "north"], "land"),
        **dict.fromkeys(["ship", "coast", "island", "river", "train", "station"], "travel"),
        **dict.fromkeys(["city", "town", "hotel", "market", "factory", "office"], "town"),
    },
    "characters": {
        **dict.fromkeys(["doctor", "nurse", "teacher", "student"], "care"),
        **dict.fromkeys(["farmer", "soldier"], "land"),
        **dict.fromkeys(["sailor", "pilot", "driver"], "travel"),
        **dict.fromkeys(
            ["detective", "lawyer", "reporter", "writer", "singer", "painter", "baker", "chef"],
            "town",
        ),
    },
}


class WorldRule(ABC):
    """A task's score of a text, as an exact sum of one signed term per word.

    Subclasses define :meth:`word_terms`; the score, the per-token oracle credit of
    token ids, and the signed decomposition of a batch of completions follow.
    """

    #: what ``--task`` calls the task this rule scores
    task: str = ""
    #: one line for the model card
    description: str = ""

    @abstractmethod
    def word_terms(self, words: Sequence[str]) -> np.ndarray:
        """One signed term per word; their sum is the text's score."""

    def score(self, text: str) -> float:
        """The rule's score of ``text`` (the reward model's training target)."""
        return float(self.word_terms(text.split()).sum())

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`score` of each text."""
        return np.asarray([self.score(t) for t in texts], dtype=np.float64)

    def completion_terms(self, prompt_ids: np.ndarray, completion_ids: np.ndarray) -> np.ndarray:
        """The signed term of each completion token, read in the context of its prompt."""
        words = rule_words(np.concatenate([prompt_ids, completion_ids]))
        return self.word_terms(words)[len(prompt_ids) :]

    def relevance(self, prompt_ids: np.ndarray, completion_ids: np.ndarray) -> np.ndarray:
        """The oracle credit map: each completion token's ``|term|`` (a RelevanceCredit map)."""
        return np.abs(self.completion_terms(prompt_ids, completion_ids))

    def contributions(self, batch: Any) -> list[np.ndarray]:
        """Signed terms of each completion of a CompletionBatch (a SignedCredit decomposition)."""
        return [self.completion_terms(p, c) for p, c in zip(batch.prompt_ids, batch.completion_ids)]


class ProtagonistRule(WorldRule):
    """``scale`` if the text's first character is a profession, ``-scale`` if not, 0 if none.

    Only a character named within the first ``window`` words counts, so the one
    decisive word sits near the start of a completion and the rest is neutral.

    Example:
        >>> rule = ProtagonistRule()
        >>> rule.word_terms("the film follows a chef who meets a boy".split()).tolist()
        [0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]
        >>> rule.score("we see a boy and a chef"), rule.score("the movie runs for two hours")
        (-2.0, 0.0)
    """

    task = "decisive"
    description = (
        "+2 if the first character named in the first 16 words has a profession (chef, "
        "doctor, ...), -2 if not (boy, mother, ...), 0 if none: one decisive early word"
    )

    def __init__(self, scale: float = 2.0, window: int = 16) -> None:
        self.scale = float(scale)
        self.window = int(window)

    def word_terms(self, words: Sequence[str]) -> np.ndarray:
        terms = np.zeros(len(words), dtype=np.float64)
        for i, word in enumerate(words[: self.window]):
            if word in CHARACTER_WORDS:
                terms[i] = self.scale if CHARACTER_WORDS[word] else -self.scale
                break
        return terms


class ShortWordsRule(WorldRule):
    """``scale`` x the mean over the text's words of +1 (at most 3 letters) or -1 (longer).

    Every word carries a term of the same size, ``scale / n``: the credit is
    diffuse, and its magnitude is uniform (uniform credit is the oracle's map; only
    the sign differs by word). ``<eos>`` counts as a long word.

    Example:
        >>> rule = ShortWordsRule()
        >>> rule.word_terms("the plot was bad".split()).tolist()
        [3.0, -3.0, 3.0, 3.0]
        >>> rule.score("the plot was bad")
        6.0
    """

    task = "diffuse"
    description = (
        "12 x the mean over words of +1 for a word of at most 3 letters, -1 for a longer one "
        "(about half the corpus's words are short): "
        "every word carries the same small share"
    )

    def __init__(self, scale: float = 12.0, longest_short: int = 3) -> None:
        self.scale = float(scale)
        self.longest_short = int(longest_short)

    def word_terms(self, words: Sequence[str]) -> np.ndarray:
        if not words:
            return np.zeros(0, dtype=np.float64)
        signs = np.asarray([1.0 if len(w) <= self.longest_short else -1.0 for w in words])
        return self.scale * signs / len(words)


class FittingPlaceRule(WorldRule):
    """``scale`` x the mean, over the text's (character, place) pairs, of how well they fit.

    Every character with a domain (a sailor, a farmer; not a boy or a family) pairs
    with every place the text names. A pair scores 1 if the two share a domain (a
    sailor and a ship, a farmer and the mountains) and ``misfit`` if not; a text
    without pairs scores 0. Each pair's share of the score is split evenly between
    its two words, so neither word scores alone: a place's credit depends on the
    characters around it. (A mean over pairs, a function of how often each domain's
    characters and places occur, which a reward model's attention can read.)

    Example:
        >>> rule = FittingPlaceRule()
        >>> rule.word_terms("a sailor works in a ship with a boy".split()).tolist()
        [0.0, 3.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0]
        >>> rule.score("a chef and a sailor visit the coast"), rule.score("a ship and a boy")
        (1.5, 0.0)
    """

    task = "interaction"
    description = (
        "6 x the mean over (character, place) pairs of the text of +1 if they fit (a sailor "
        "and a ship), -0.5 if not, each pair's share split between its two words: pairs "
        "carry the credit"
    )

    def __init__(self, scale: float = 6.0, misfit: float = -0.5) -> None:
        self.scale = float(scale)
        self.misfit = float(misfit)

    def pairs(self, words: Sequence[str]) -> list[tuple[int, int, float]]:
        """``(character index, place index, fit)`` of every pair of ``words``."""
        places, characters = PLACE_DOMAINS["places"], PLACE_DOMAINS["characters"]
        named = [(i, characters[w]) for i, w in enumerate(words) if w in characters]
        settings = [(j, places[w]) for j, w in enumerate(words) if w in places]
        return [
            (i, j, 1.0 if who == where else self.misfit)
            for i, who in named
            for j, where in settings
        ]

    def word_terms(self, words: Sequence[str]) -> np.ndarray:
        terms = np.zeros(len(words), dtype=np.float64)
        pairs = self.pairs(words)
        for character, place, fit in pairs:
            share = self.scale * fit / len(pairs)
            terms[character] += share / 2
            terms[place] += share / 2
        return terms


#: the credit-benchmark rules by task name
RULES: dict[str, WorldRule] = {
    rule.task: rule for rule in (ProtagonistRule(), ShortWordsRule(), FittingPlaceRule())
}


@lru_cache(maxsize=1)
def _id_to_word() -> tuple[str, ...]:
    from llm_gym.assets import TOKENIZER_DIR

    vocab = json.loads((TOKENIZER_DIR / "tokenizer.json").read_text())["model"]["vocab"]
    words = [""] * len(vocab)
    for word, index in vocab.items():
        words[index] = word
    return tuple(words)


def rule_words(token_ids: np.ndarray | Sequence[int]) -> list[str]:
    """The words of token ids of the embedded (word-level) tokenizer.

    >>> rule_words([3, 10])
    ['a', 'film']
    """
    words = _id_to_word()
    return [words[int(i)] for i in token_ids]
