"""The build's text: the generated corpus, its tokenizer, token streams, prompts, VADER's judgement.

Holds :func:`check_lexicon`, :func:`build_tokenizer`, :func:`token_stream`,
:func:`windows`, :func:`review_prompts`, :func:`token_valence_table` and
:func:`vader_scores` (the reward models' target, :data:`SCORE_SCALE` x VADER compound).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llm_gym.assets.lexicon import word_valence
from llm_gym.assets.world import NEUTRAL_WORDS, SENTIMENT_WORDS

__all__ = [
    "SCORE_SCALE",
    "SPECIAL_TOKENS",
    "build_tokenizer",
    "check_lexicon",
    "review_prompts",
    "token_stream",
    "token_valence_table",
    "vader_analyzer",
    "vader_scores",
    "windows",
]

#: the special tokens of the embedded tokenizer, in id order
SPECIAL_TOKENS = ["<pad>", "<eos>", "<unk>"]
#: reward models are trained to score 4 x VADER's compound (range about +-4), neutral text at 0
SCORE_SCALE = 4.0


def check_lexicon() -> None:
    """Fail unless the corpus grammar's word lists agree with VADER's lexicon."""
    from vaderSentiment import vaderSentiment as vader

    lexicon = vader.SentimentIntensityAnalyzer().lexicon
    loaded = [
        w for w in NEUTRAL_WORDS if w in lexicon or w in vader.BOOSTER_DICT or w in vader.NEGATE
    ]
    if loaded:
        raise RuntimeError(f"neutral filler words carry VADER sentiment: {loaded}")
    missing = [w for w in SENTIMENT_WORDS if w not in lexicon]
    if missing:
        raise RuntimeError(f"sentiment words missing from the VADER lexicon: {missing}")


def build_tokenizer(corpus: list[str], out: Path) -> Any:
    """Word-level tokenizer; ids ordered by (frequency desc, word) so the build is deterministic.

    >>> import tempfile
    >>> tokenizer = build_tokenizer(["the film", "the plot"], Path(tempfile.mkdtemp()))
    >>> tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 4])
    ['<pad>', '<eos>', '<unk>', 'the', 'film']
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    counts: dict[str, int] = {}
    for text in corpus:
        for word in text.split():
            counts[word] = counts.get(word, 0) + 1
    words = sorted(counts, key=lambda w: (-counts[w], w))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + words)}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(str(out))
    return tokenizer


def token_stream(tokenizer: Any, reviews: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The reviews' token ids joined by EOS, and where each review starts in that stream."""
    ids: list[int] = []
    starts: list[int] = []
    for text in reviews:
        starts.append(len(ids))
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    return np.asarray(ids, dtype=np.int64), np.asarray(starts, dtype=np.int64)


def windows(
    stream: np.ndarray, starts: np.ndarray, rng: np.random.Generator, batch: int, length: int
) -> np.ndarray:
    """(batch, length) windows of the stream, each from the start of a random review.

    >>> stream, starts = np.arange(10), np.array([0, 4, 8])
    >>> windows(stream, starts, np.random.default_rng(0), 2, 3).tolist()
    [[7, 8, 9], [4, 5, 6]]
    """
    picks = starts[rng.integers(len(starts), size=batch)]
    picks = np.minimum(picks, len(stream) - length)
    return np.stack([stream[p : p + length] for p in picks])


def review_prompts(held_out: list[str], n_prompts: int, seed: int) -> list[str]:
    """The first 2-8 words of held-out reviews, as the ABC paper prompts with IMDb; distinct."""
    rng = np.random.default_rng(seed + 7)
    prompts = []
    for text in held_out:
        words = text.split()[: int(rng.integers(2, 9))]
        prompts.append(" ".join(words))
    return list(dict.fromkeys(prompts))[:n_prompts]


def token_valence_table(tokenizer: Any) -> list[float]:
    """VADER valence of every token id (0.0 for special and neutral tokens)."""
    vocab = tokenizer.get_vocab()
    valence = [0.0] * len(vocab)
    for token, index in vocab.items():
        valence[index] = 0.0 if token in SPECIAL_TOKENS else word_valence(token)
    return valence


def vader_analyzer() -> Any:
    """VADER's sentiment analyser (the vaderSentiment package ships its lexicon)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_scores(texts: list[str], analyzer: Any) -> np.ndarray:
    """:data:`SCORE_SCALE` x VADER compound of each text (EOS read as a space).

    >>> vader_scores(["a great film", "the plot"], vader_analyzer()).round(3).tolist()
    [2.5, 0.0]
    """
    compound = np.array(
        [analyzer.polarity_scores(t.replace("<eos>", " "))["compound"] for t in texts]
    )
    return SCORE_SCALE * compound
