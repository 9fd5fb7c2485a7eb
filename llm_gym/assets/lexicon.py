"""Ground-truth per-token relevance from the VADER sentiment lexicon.

VADER scores a text from the valences of its words, so each word's contribution
is known. These helpers map word valences onto any tokenizer's tokens through
character spans: the oracle credit map and the reference for credit fidelity.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

__all__ = ["lexicon", "span_valence", "word_valence"]

_WORD = re.compile(r"[a-z']+")


@lru_cache(maxsize=1)
def lexicon() -> dict[str, float]:
    """VADER's word -> valence table (shipped inside the vaderSentiment wheel)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return dict(SentimentIntensityAnalyzer().lexicon)


def word_valence(word: str) -> float:
    """A word's lexicon valence (0.0 when it carries none)."""
    return float(lexicon().get(word.lower(), 0.0))


def span_valence(text: str, char_spans: np.ndarray) -> np.ndarray:
    """Valence of each token given its (start, end) character span in ``text``.

    Each lexicon word's valence goes to the tokens overlapping it, split by the
    number of overlapping characters, so a word cut into several tokens keeps
    its total.
    """
    spans = np.asarray(char_spans, dtype=np.int64).reshape(-1, 2)
    values = np.zeros(len(spans), dtype=np.float64)
    for match in _WORD.finditer(text.lower()):
        valence = lexicon().get(match.group(), 0.0)
        if valence == 0.0:
            continue
        overlap = np.clip(
            np.minimum(spans[:, 1], match.end()) - np.maximum(spans[:, 0], match.start()), 0, None
        )
        if overlap.sum() > 0:
            values += valence * overlap / overlap.sum()
    return values
