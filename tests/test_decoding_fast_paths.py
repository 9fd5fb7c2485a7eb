"""The fast paths of agents/decoding.py give exactly what the plain ones give.

Content hashes find the update's shared prefixes (instead of comparing every pair
of windows token by token), and the rollout's key/value cache writes each token
into storage allocated once per encode (instead of concatenating per token).
"""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel

from llm_gym.agents import decoding
from llm_gym.agents.decoding import (
    IncrementalDecoder,
    _pairwise_prefix_roots,
    _prefix_roots,
    _WindowLayer,
)


def random_windows(generator: torch.Generator, episodes: bool) -> tuple[torch.Tensor, torch.Tensor]:
    rows = int(torch.randint(1, 24, (1,), generator=generator))
    length = int(torch.randint(1, 14, (1,), generator=generator))
    vocab = int(torch.randint(1, 4, (1,), generator=generator))
    n = torch.randint(0, length + 1, (rows,), generator=generator)
    mask = (torch.arange(length)[None] >= (length - n)[:, None]).long()
    ids = torch.randint(0, vocab, (rows, length), generator=generator)
    if episodes:  # steps of a few episodes: many windows start with another's content
        base = torch.randint(0, vocab, (3, length), generator=generator)
        for i in range(rows):
            e, k = int(torch.randint(0, 3, (1,), generator=generator)), int(n[i])
            ids[i] = 0
            ids[i, length - k :] = base[e, :k]
    return ids, mask


@pytest.mark.parametrize("episodes", [False, True])
def test_hashed_prefix_roots_equal_the_pairwise_comparison(episodes):
    generator = torch.Generator().manual_seed(1)
    for _ in range(400):
        ids, mask = random_windows(generator, episodes)
        for got, expected in zip(_prefix_roots(ids, mask), _pairwise_prefix_roots(ids, mask)):
            assert torch.equal(got, expected)


def test_a_hash_collision_or_a_mask_with_holes_falls_back_to_the_exact_answer(monkeypatch):
    generator = torch.Generator().manual_seed(2)
    ids, mask = random_windows(generator, episodes=True)
    expected = _pairwise_prefix_roots(ids, mask)
    # every weight 0: every content hashes alike, so the check must catch the false matches
    monkeypatch.setattr(
        decoding, "_content_hash_weights", lambda n, d: torch.zeros(n, dtype=torch.long)
    )
    for got, want in zip(_prefix_roots(ids, mask), expected):
        assert torch.equal(got, want)
    holes = torch.tensor([[1, 0, 1], [0, 1, 1]])
    assert all(
        torch.equal(a, b)
        for a, b in zip(_prefix_roots(holes * 3, holes), _pairwise_prefix_roots(holes * 3, holes))
    )


def test_the_rollout_cache_grows_in_place_and_equals_concatenation():
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=20, n_embd=16, n_layer=2, n_head=2)).eval()
    decoder = IncrementalDecoder(lm.base_model)
    # padding enough for every step: no real token leaves the window, no row restarts
    ids = torch.tensor([[0, 0, 0, 0, 0, 0, 5, 6], [0, 0, 0, 0, 0, 7, 8, 9]])
    mask = (ids > 0).long()
    storage = None
    for token in (3, 4, 5, 6, 7):
        hidden = decoder(ids, mask)
        layer = decoder._cache.layers[0]
        assert isinstance(layer, _WindowLayer)
        if storage is None:
            storage = layer._storage[0].data_ptr()
        assert layer._storage[0].data_ptr() == storage  # no new storage per token
        with torch.no_grad():
            cache = DynamicCache()  # the plain, concatenating cache
            used = int(mask.any(0).nonzero()[0])
            full = lm.base_model(
                ids[:, used:],
                attention_mask=mask[:, used:],
                position_ids=decoding.position_ids_from_mask(mask[:, used:]),
                use_cache=True,
                **{decoder._cache_arg: cache},
            ).last_hidden_state[:, -1]
        assert torch.allclose(hidden, full, atol=1e-6)
        ids = torch.cat([ids[:, 1:], torch.full((2, 1), token)], 1)
        mask = torch.cat([mask[:, 1:], torch.ones(2, 1, dtype=torch.long)], 1)
