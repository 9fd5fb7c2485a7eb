"""Each word's signed contribution to the embedded world's score, under the world's own rule.

The embedded reward models are trained to score :data:`SCORE_SCALE` x VADER's
compound score of a text. VADER computes the compound score from one sentiment
value per word: the word's lexicon valence after VADER's own rules (a negation
within three words before it, intensifiers before it, "but" halving what comes
before and multiplying what comes after by 1.5), summed to ``s`` and normalised
as ``s / sqrt(s^2 + 15)``. So the world's score is an exact sum of per-word terms,

    score = SCORE_SCALE * sum_i s_i / sqrt(s^2 + 15),

each word's term carrying its own sign: "good" in "not good" contributes a
negative amount, and negators, intensifiers and neutral words contribute 0 (their
effect is on the sentiment word they modify). The factor ``1 / sqrt(s^2 + 15)`` is
shared by the words of one text, so the terms are the word sentiments scaled to
the score, with no division by a sum that could vanish.

Holds :data:`SCORE_SCALE`, :func:`word_sentiments` (VADER's per-word values and
the character span of each word), :func:`vader_score`, :func:`signed_contributions`
(the per-token terms for tokens given by their character spans) and
:func:`world_contributions` (the same for a batch of completions: the embedded
world's signed oracle).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "SCORE_SCALE",
    "signed_contributions",
    "vader_score",
    "word_sentiments",
    "world_contributions",
]

#: the embedded reward models' score is SCORE_SCALE x VADER compound (the build's target)
SCORE_SCALE = 4.0
#: VADER's normalisation constant: compound = s / sqrt(s^2 + ALPHA)
ALPHA = 15.0
EOS_TEXT = "<eos>"


@lru_cache(maxsize=1)
def _analyzer() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def word_sentiments(text: str) -> tuple[np.ndarray, np.ndarray]:
    """VADER's sentiment value of each whitespace-separated word of ``text``, after its rules.

    Returns ``(spans, values)``: the ``(start, end)`` character span of each word and
    its value, computed by VADER's own ``sentiment_valence`` and ``but`` check, so
    that ``values.sum()`` is the sum VADER normalises (the embedded world has no
    "!" or "?", VADER's only other term). ``<eos>`` is read as a space, as in the
    reward models' training targets.

    Example:
        >>> spans, values = word_sentiments("the acting was not good")
        >>> spans[-1].tolist(), round(float(values[-1]), 3)
        ([19, 23], -1.406)
    """
    from vaderSentiment.vaderSentiment import BOOSTER_DICT, SentiText

    text = text.replace(EOS_TEXT, " " * len(EOS_TEXT))
    spans, start = [], None
    for i, char in enumerate(text + " "):
        if char.isspace() and start is not None:
            spans.append((start, i))
            start = None
        elif not char.isspace() and start is None:
            start = i
    analyzer = _analyzer()
    senti = SentiText(text)
    words = senti.words_and_emoticons
    if len(words) != len(spans):
        raise ValueError(
            f"VADER split {text!r} into {len(words)} words but whitespace into {len(spans)}; "
            "expected the same words"
        )
    sentiments: list[float] = []
    for i, item in enumerate(words):
        # the same per-word pass as SentimentIntensityAnalyzer.polarity_scores
        if item.lower() in BOOSTER_DICT or (
            i < len(words) - 1 and item.lower() == "kind" and words[i + 1].lower() == "of"
        ):
            sentiments.append(0.0)
            continue
        sentiments = analyzer.sentiment_valence(0, senti, item, i, sentiments)
    sentiments = analyzer._but_check(words, sentiments)
    return np.asarray(spans, dtype=np.int64).reshape(-1, 2), np.asarray(sentiments, np.float64)


def vader_score(text: str, scale: float = SCORE_SCALE) -> float:
    """``scale`` x VADER's compound score of ``text`` (unrounded), ``<eos>`` read as a space.

    Example:
        >>> round(vader_score("a great film"), 3), vader_score("the plot")
        (2.5, 0.0)
    """
    total = float(word_sentiments(text)[1].sum())
    return scale * total / math.sqrt(total * total + ALPHA)


def signed_contributions(
    text: str, char_spans: np.ndarray, scale: float = SCORE_SCALE
) -> np.ndarray:
    """Each token's signed share of ``scale`` x VADER compound of ``text``.

    A word's term ``scale * s_i / sqrt(s^2 + 15)`` goes to the tokens overlapping
    its characters, split by the number of overlapping characters (a word cut
    into several tokens keeps its total). Words no token covers (the prompt's,
    when ``char_spans`` are the completion's) are left out, so the result sums to
    the completion's part of the score.

    Args:
        text: the full text the reward model reads (prompt and completion).
        char_spans: ``(T, 2)`` character ``[start, end)`` of each token in ``text``.
        scale: the score's scale (the embedded reward models': :data:`SCORE_SCALE`).

    Example:
        >>> text = "the acting was very good but the plot was bad"
        >>> spans = [[0, 3], [4, 10], [11, 14], [15, 19], [20, 24], [25, 28], [29, 32],
        ...          [33, 37], [38, 41], [42, 45]]
        >>> terms = signed_contributions(text, np.array(spans))
        >>> [round(float(t), 3) for t in terms if t], bool(np.isclose(terms.sum(), vader_score(text)))
        ([0.934, -3.195], True)
    """
    spans = np.asarray(char_spans, dtype=np.int64).reshape(-1, 2)
    word_spans, values = word_sentiments(text)
    total = float(values.sum())
    terms = scale * values / math.sqrt(total * total + ALPHA)
    out = np.zeros(len(spans), dtype=np.float64)
    for (start, end), term in zip(word_spans, terms):
        if term == 0.0:
            continue
        overlap = np.clip(np.minimum(spans[:, 1], end) - np.maximum(spans[:, 0], start), 0, None)
        if overlap.sum() > 0:
            out += term * overlap / overlap.sum()
    return out


def world_contributions(batch: Any) -> list[np.ndarray]:
    """:func:`signed_contributions` of each completion of a :class:`~llm_gym.rewards.CompletionBatch`.

    The embedded world's signed oracle: per completion token, its term of the
    score under the world's rule, read from the full text (prompt and completion)
    so that a negation in the prompt acts on the completion as it does for the
    reward model.

    Example:
        >>> import numpy as np
        >>> from llm_gym.assets import TOKENIZER_DIR
        >>> from llm_gym.rewards import CompletionBatch
        >>> from llm_gym.rewards.loading import load_tokenizer
        >>> tokenizer = load_tokenizer(str(TOKENIZER_DIR))
        >>> ids = lambda text: np.array(tokenizer(text, add_special_tokens=False)["input_ids"])
        >>> batch = CompletionBatch([ids("the acting was")], [ids("not good .")], tokenizer)
        >>> [round(float(v), 3) for v in world_contributions(batch)[0]]
        [0.0, -1.365, 0.0]
    """
    return [
        signed_contributions(text, batch.completion_char_spans(i))
        for i, text in enumerate(batch.texts)
    ]
