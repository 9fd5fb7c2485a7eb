"""The embedded world's corpus: grammar-generated movie reviews with rare, decisive sentiment.

Most of a review is neutral movie talk (plot, production, setting), checked free
of VADER lexicon, booster and negation words; about one sentence in five or six
is an opinion with one or two sentiment words, sometimes negated, intensified or
contrasted with "but". Sentiment words are therefore about 2-3% of tokens, so
in the default task's 64-token completions the score hangs on very few tokens:
credit assignment is the hard part.

Text is lower case, words and punctuation separated by single spaces, which the
word-level tokenizer splits back exactly.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NEUTRAL_WORDS", "SENTIMENT_WORDS", "generate_corpus", "generate_review"]

# ----------------------------------------------------------------- neutral talk
SUBJECTS = [
    "a detective",
    "a teacher",
    "a farmer",
    "a pilot",
    "a sailor",
    "a painter",
    "a doctor",
    "a nurse",
    "a student",
    "a writer",
    "a singer",
    "a soldier",
    "a baker",
    "a lawyer",
    "two brothers",
    "two sisters",
    "an old man",
    "an old woman",
    "a young man",
    "a young woman",
    "a family",
    "a boy",
    "a girl",
    "a mother",
    "a father",
    "a reporter",
    "a chef",
    "a driver",
]
VERBS = [
    "follows",
    "visits",
    "leaves",
    "meets",
    "watches",
    "moves to",
    "returns to",
    "drives to",
    "walks through",
    "works in",
    "lives in",
    "arrives in",
    "travels to",
    "searches",
]
PLACES = [
    "a small town",
    "the city",
    "a village",
    "the coast",
    "a farm",
    "the mountains",
    "an island",
    "a hotel",
    "a school",
    "a hospital",
    "a train",
    "a ship",
    "the desert",
    "a river",
    "the north",
    "a market",
    "a station",
    "a factory",
    "an office",
    "a garden",
]
TIMES = [
    "in the summer",
    "in the winter",
    "at night",
    "after the storm",
    "in the spring",
    "during the harvest",
    "in the autumn",
    "over one week",
    "over many years",
    "in the morning",
]
ASPECTS = [
    "the acting",
    "the script",
    "the music",
    "the ending",
    "the camera work",
    "the story",
    "the dialogue",
    "the cast",
    "the pacing",
    "the score",
    "the editing",
    "the lead",
    "the plot",
    "the direction",
    "the sound",
    "the design",
]
PRODUCTION = [
    "the film was shot in",
    "the movie was made in",
    "many scenes take place in",
    "the story is set in",
    "the crew worked in",
    "the opening scene shows",
]
DURATIONS = ["two hours", "ninety minutes", "three hours", "an hour", "two hours and ten minutes"]
NEUTRAL_TEMPLATES = [
    "{subject} {verb} {place} {time} .",
    "the film follows {subject} who {verb} {place} .",
    "{production} {place} .",
    "the movie runs for {duration} .",
    "{subject} {verb} {place} with {subject2} .",
    "later {subject} {verb} {place} .",
    "the story begins when {subject} {verb} {place} {time} .",
    "{aspect} uses {detail} .",
    "we see {subject} and {subject2} in {place} .",
    "then {subject} {verb} {place} {time} .",
]
DETAILS = [
    "long shots",
    "a lot of color",
    "old songs",
    "many close shots",
    "a slow rhythm",
    "short scenes",
    "two narrators",
    "black and white",
    "a single set",
    "real places",
]

# -------------------------------------------------------------------- opinions
POSITIVE = [
    "good",
    "great",
    "brilliant",
    "wonderful",
    "excellent",
    "beautiful",
    "amazing",
    "superb",
    "lovely",
    "fun",
    "charming",
    "delightful",
]
NEGATIVE = [
    "bad",
    "awful",
    "terrible",
    "boring",
    "dull",
    "weak",
    "horrible",
    "poor",
    "stupid",
    "annoying",
    "ugly",
    "disappointing",
]
INTENSIFIERS = ["very", "really", "extremely", "quite"]
NEGATIONS = ["not", "never"]
OPINION_TEMPLATES = [
    "{aspect} was {adj} .",
    "{aspect} was {intensifier} {adj} .",
    "{aspect} was {negation} {adj} .",
    "{aspect} was {adj} but {aspect2} was {adj2} .",
    "overall it is a {adj} film .",
    "i thought {aspect} was {adj} .",
]

#: the words of the embedded world that carry sentiment
SENTIMENT_WORDS = tuple(POSITIVE + NEGATIVE)
#: the words of the embedded world without sentiment
NEUTRAL_WORDS = tuple(
    sorted(
        {
            w
            for group in (SUBJECTS, VERBS, PLACES, TIMES, ASPECTS, PRODUCTION, DURATIONS, DETAILS)
            for phrase in group
            for w in phrase.split()
        }
        | {w for t in NEUTRAL_TEMPLATES for w in t.split() if not w.startswith("{")}
        | {w for t in OPINION_TEMPLATES for w in t.split() if not w.startswith("{")} - {"but"}
    )
)


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _neutral_sentence(rng: np.random.Generator) -> str:
    subject, subject2 = rng.choice(len(SUBJECTS), size=2, replace=False)
    return _pick(rng, NEUTRAL_TEMPLATES).format(
        subject=SUBJECTS[subject],
        subject2=SUBJECTS[subject2],
        verb=_pick(rng, VERBS),
        place=_pick(rng, PLACES),
        time=_pick(rng, TIMES),
        production=_pick(rng, PRODUCTION),
        duration=_pick(rng, DURATIONS),
        aspect=_pick(rng, ASPECTS),
        detail=_pick(rng, DETAILS),
    )


def _opinion_sentence(rng: np.random.Generator) -> str:
    positive = rng.random() < 0.5
    adjectives = POSITIVE if positive else NEGATIVE
    contrast = NEGATIVE if positive else POSITIVE
    aspect, aspect2 = rng.choice(len(ASPECTS), size=2, replace=False)
    return _pick(rng, OPINION_TEMPLATES).format(
        aspect=ASPECTS[aspect],
        aspect2=ASPECTS[aspect2],
        adj=_pick(rng, adjectives),
        adj2=_pick(rng, contrast),
        intensifier=_pick(rng, INTENSIFIERS),
        negation=_pick(rng, NEGATIONS),
    )


def generate_review(rng: np.random.Generator, opinion_rate: float = 0.18) -> str:
    """One review: 3-7 sentences, each an opinion with probability ``opinion_rate``."""
    n = int(rng.integers(3, 8))
    sentences = [
        _opinion_sentence(rng) if rng.random() < opinion_rate else _neutral_sentence(rng)
        for _ in range(n)
    ]
    return " ".join(sentences)


def generate_corpus(n_reviews: int, seed: int = 0, opinion_rate: float = 0.18) -> list[str]:
    """``n_reviews`` reviews, identical for the same seed."""
    rng = np.random.default_rng(seed)
    return [generate_review(rng, opinion_rate) for _ in range(n_reviews)]
