"""Incremental decoding of left-padded token windows with a key/value cache.

Holds :class:`IncrementalDecoder`, which turns the fixed-length observation
windows of a token environment into one-token forwards: a row whose new window is
its previous window shifted left by one token (dropping only padding) reuses the
cached keys and values; any other row (a new episode, or anything unexpected) is
re-encoded in full. The result is therefore always exactly what a full forward over
the window gives. The cache's keys and values live in storage allocated once per
full encode (:class:`_WindowLayer`), not regrown on every token. Also holds the
batched forwards of the update (:func:`shared_prefix_hidden`) and of the KL's
reference (:func:`episode_window_hidden`), which read many steps of an episode from
one window forward.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any, cast

import torch
from torch import nn
from transformers import DynamicCache

try:  # transformers >= 4.56 builds caches from layer objects
    from transformers.cache_utils import DynamicLayer
except ImportError:  # older: caches keep growing by concatenation
    DynamicLayer = object  # type: ignore[assignment,misc]

from llm_gym.rewards.padding import position_ids_from_mask

__all__ = [
    "IncrementalDecoder",
    "episode_window_hidden",
    "position_ids_from_mask",
    "shared_prefix_hidden",
]


#: largest batch^2 x window comparison shared_prefix_hidden makes (256 MB of int64)
_MAX_PAIR_ELEMENTS = 2**25

#: content hashes weigh token ids by random integers below this (sums of up to 2**14
#: products with ids below 2**20 stay inside int64; an overflow would wrap, deterministically,
#: so equal contents would still hash equal and the token-by-token check stays the judge)
_HASH_WEIGHT_BOUND = 2**28
_hash_weights: dict[tuple[int, torch.device], torch.Tensor] = {}


def _content_hash_weights(length: int, device: torch.device) -> torch.Tensor:
    """Fixed random int64 weights, one per content position (the same in every call)."""
    key = (length, device)
    if key not in _hash_weights:
        generator = torch.Generator().manual_seed(0)
        weights = torch.randint(1, _HASH_WEIGHT_BOUND, (length,), generator=generator)
        _hash_weights[key] = weights.to(device)
    return _hash_weights[key]


def _pairwise_prefix_roots(
    ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_prefix_roots` by comparing every pair of windows token by token (batch^2 x window)."""
    length = ids.shape[1]
    n = mask.sum(1)
    shift = n[:, None] - n[None, :]  # [j, i]: how much longer window j is than window i
    positions = torch.arange(length, device=ids.device)
    source = (positions[None, None, :] - shift[:, :, None]).clamp(0, length - 1)
    shifted = ids.gather(1, source.reshape(len(ids), -1)).reshape(source.shape)  # ids_j[p - shift]
    same = (shifted == ids[None, :, :]) | (mask[None, :, :] == 0)
    contains = same.all(-1) & (shift >= 0)
    root = torch.where(contains, n[:, None] + 1, torch.zeros_like(shift)).argmax(0)
    return root, shift[root, torch.arange(len(ids), device=ids.device)]


def _prefix_roots(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each window, the longest window of the batch whose content starts with its content.

    Returns ``root`` (index of that window; among equally long ones the first) and
    ``shift`` (how many tokens longer it is). Left-padded windows are matched by
    content hashes, batch^2 + batch x window work instead of batch^2 x window: a
    window can only start with another's content if its hash of that many tokens
    equals the other's hash. Each chosen root is then checked token by token, so a
    hash collision cannot change the answer: it only sends the batch to the pairwise
    comparison, as do windows that are not left-padded.
    """
    length = ids.shape[1]
    if length == 0 or not bool((mask[:, 1:] >= mask[:, :-1]).all() & (mask <= 1).all()):
        return _pairwise_prefix_roots(ids, mask)
    n = mask.sum(1)
    rows = torch.arange(len(ids), device=ids.device)
    offset = torch.arange(length, device=ids.device)
    inside = offset[None, :] < n[:, None]
    # content[i, t]: the t-th real token of window i (0 past its end)
    source = (offset[None, :] + (length - n)[:, None]).clamp(max=length - 1)
    content = torch.where(inside, ids.gather(1, source), torch.zeros_like(ids))
    weights = _content_hash_weights(length, ids.device)
    prefix = torch.cat([n.new_zeros(len(ids), 1), (content * weights).cumsum(1)], 1)
    # [j, i]: the hash of window j's first n_i tokens against window i's whole content
    candidate = prefix.gather(1, n[None, :].expand(len(ids), -1)) == prefix[rows, n][None, :]
    shift = n[:, None] - n[None, :]
    candidate &= shift >= 0
    root = torch.where(candidate, n[:, None] + 1, torch.zeros_like(shift)).argmax(0)
    if not bool(((content[root] == content) | ~inside).all()):
        return _pairwise_prefix_roots(ids, mask)
    return root, shift[root, rows]


def shared_prefix_hidden(trunk: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Last-position hidden states of left-padded windows, one forward per distinct episode.

    A window whose content (prompt + completion so far) is the start of a longer
    window's content is read from that window's forward at the matching position:
    causal attention makes it the same hidden state. A minibatch holding several
    steps of one episode thus costs one window forward for them, not one each.
    Finding the matches compares content hashes of every pair of windows; past
    ``2**25`` batch^2 x window elements it runs one forward per window instead.

    Example:
        >>> import torch
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> lm = GPT2LMHeadModel(GPT2Config(vocab_size=11, n_embd=8, n_layer=1, n_head=2)).eval()
        >>> ids = torch.tensor([[0, 0, 5, 6], [0, 5, 6, 7], [0, 0, 4, 6]])
        >>> mask = (ids > 0).long()
        >>> full = lm.base_model(ids, attention_mask=mask,
        ...     position_ids=position_ids_from_mask(mask)).last_hidden_state[:, -1]
        >>> torch.allclose(shared_prefix_hidden(lm.base_model, ids, mask), full, atol=1e-5)
        True
    """
    if len(ids) ** 2 * ids.shape[1] > _MAX_PAIR_ELEMENTS:  # the pairwise match would not pay
        out = trunk(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            use_cache=False,
        )
        return out.last_hidden_state[:, -1]
    root, shift = _prefix_roots(ids, mask)
    roots, slot = torch.unique(root, return_inverse=True)
    # use_cache=False: nothing reads a cache here, and building one copies every layer's keys
    out = trunk(
        input_ids=ids[roots],
        attention_mask=mask[roots],
        position_ids=position_ids_from_mask(mask[roots]),
        use_cache=False,
    )
    return out.last_hidden_state[slot, ids.shape[1] - 1 - shift]


#: windows per trunk forward in episode_window_hidden (bounds its activation memory)
_FORWARD_CHUNK = 256


def episode_window_hidden(
    trunk: nn.Module, ids: torch.Tensor, mask: torch.Tensor, chunk: int = _FORWARD_CHUNK
) -> torch.Tensor:
    """Last-position hidden states of a rollout's windows, ``(steps, envs, window)`` -> ``(steps, envs, width)``.

    The windows of one environment column are consecutive steps of its episodes. A
    window whose successor is itself shifted left by one token with one token
    appended (dropping only padding) is read from the successor's forward at the
    position before, and so on along the chain: causal attention makes it the same
    hidden state. Only the last window of each chain, about one per episode, goes
    through the trunk, all columns together in forwards of at most ``chunk`` windows.

    Example:
        >>> import torch
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> lm = GPT2LMHeadModel(GPT2Config(vocab_size=11, n_embd=8, n_layer=1, n_head=2)).eval()
        >>> ids = torch.tensor([[[0, 0, 5], [0, 0, 4]], [[0, 5, 6], [0, 0, 3]]])  # (2 steps, 2 envs)
        >>> mask = (ids > 0).long()
        >>> flat_ids, flat_mask = ids.reshape(4, 3), mask.reshape(4, 3)
        >>> full = lm.base_model(flat_ids, attention_mask=flat_mask,
        ...     position_ids=position_ids_from_mask(flat_mask)).last_hidden_state[:, -1]
        >>> hidden = episode_window_hidden(lm.base_model, ids, mask)
        >>> torch.allclose(hidden.reshape(4, -1), full, atol=1e-5)
        True
    """
    steps, envs, length = ids.shape
    step = torch.arange(steps, device=ids.device)[:, None].expand(steps, envs)
    # continues[s]: window s + 1 is window s shifted by one token, no real token dropped
    continues = (
        (ids[1:, :, :-1] == ids[:-1, :, 1:]).all(-1)
        & (mask[1:, :, :-1] == mask[:-1, :, 1:]).all(-1)
        & (mask[1:, :, -1] == 1)
        & (mask[:-1, :, 0] == 0)
    )
    last = torch.cat([~continues, continues.new_ones(1, envs)])  # the last window of a chain
    end = torch.where(last, step, torch.full_like(step, steps)).flip(0).cummin(0).values.flip(0)
    shift = (end - step).reshape(-1)  # (steps * envs,), step-major
    root = (end * envs + torch.arange(envs, device=ids.device)).reshape(-1)
    roots, slot = torch.unique(root, return_inverse=True)
    flat_ids, flat_mask = ids.reshape(steps * envs, length)[roots], mask.reshape(-1, length)[roots]
    hidden = []
    for start in range(0, len(roots), chunk):
        part_ids, part_mask = flat_ids[start : start + chunk], flat_mask[start : start + chunk]
        used = part_mask.any(0).nonzero()
        first = int(used[0]) if len(used) else length - 1  # columns of padding only: skipped
        out = trunk(
            input_ids=part_ids[:, first:],
            attention_mask=part_mask[:, first:],
            position_ids=position_ids_from_mask(part_mask[:, first:]),
            use_cache=False,
        ).last_hidden_state
        states = out.new_zeros(len(part_ids), length, out.shape[-1])
        states[:, first:] = out
        hidden.append(states)
    states = torch.cat(hidden)[slot, length - 1 - shift]  # (steps * envs, width)
    return states.reshape(steps, envs, -1)


class _WindowLayer(DynamicLayer):
    """A cache layer whose keys and values live in storage allocated once per encode.

    transformers' ``DynamicLayer`` concatenates on every step, allocating a new,
    longer key and value tensor per layer and token; here a step writes its token in
    place and the layer's ``keys`` / ``values`` are views of the live columns. The
    views hold the same numbers in the same order, so attention reads exactly what
    the concatenated tensors would give.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # DynamicLayer's is unannotated
        self.capacity = capacity
        self._start = self._end = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self._storage = [self._empty(key_states), self._empty(value_states)]
        self._start = self._end = 0
        self.is_initialized = True

    def _empty(self, states: torch.Tensor, columns: int | None = None) -> torch.Tensor:
        b, h, _, d = states.shape
        return states.new_empty(b, h, max(columns or 0, self.capacity, states.shape[-2]), d)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if self._end + new > self._storage[0].shape[-2]:
            self._make_room(new)
        for store, states in zip(self._storage, (key_states, value_states), strict=True):
            store[:, :, self._end : self._end + new] = states
        self._end += new
        self._expose()
        # _expose has just set both to views of the live columns
        return cast(torch.Tensor, self.keys), cast(torch.Tensor, self.values)

    def _make_room(self, new: int) -> None:
        """Move the live columns to the front of the storage (a larger one if they do not fit)."""
        live = self._end - self._start
        storage = []
        for store in self._storage:
            columns = store[:, :, self._start : self._end]
            if live + new > store.shape[-2]:
                store = self._empty(store, 2 * (live + new))
            store[:, :, :live] = columns.clone()
            storage.append(store)
        self._storage, self._start, self._end = storage, 0, live

    def drop_oldest(self) -> None:
        """Forget the oldest cached position (the window slid by one token)."""
        self._start += 1
        self._expose()

    def _expose(self) -> None:
        self.keys, self.values = (s[:, :, self._start : self._end] for s in self._storage)


def _window_cache(capacity: int) -> DynamicCache:
    """A DynamicCache whose layers are :class:`_WindowLayer` s of ``capacity`` columns."""
    cache = DynamicCache()
    if (
        DynamicLayer is not object
        and getattr(cache, "layer_class_to_replicate", None) is DynamicLayer
    ):
        # typed as a class; transformers only calls it to make each layer
        cache.layer_class_to_replicate = partial(_WindowLayer, capacity)  # type: ignore[assignment]
    return cache


class IncrementalDecoder:
    """Last-position hidden states of a transformer trunk, one new token per call.

    Args:
        trunk: the model's base transformer (``causal_lm.base_model``), called with
            ``input_ids``, ``attention_mask``, ``position_ids`` and a ``DynamicCache``.

    Example:
        >>> import torch
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> lm = GPT2LMHeadModel(GPT2Config(vocab_size=11, n_embd=8, n_layer=1, n_head=2)).eval()
        >>> decoder = IncrementalDecoder(lm.base_model)
        >>> ids = torch.tensor([[0, 0, 5, 6]]); mask = torch.tensor([[0, 0, 1, 1]])
        >>> first = decoder(ids, mask)
        >>> ids2 = torch.tensor([[0, 5, 6, 7]]); mask2 = torch.tensor([[0, 1, 1, 1]])
        >>> full = lm.base_model(ids2, attention_mask=mask2,
        ...     position_ids=position_ids_from_mask(mask2)).last_hidden_state[:, -1]
        >>> torch.allclose(decoder(ids2, mask2), full, atol=1e-5)
        True
    """

    def __init__(self, trunk: nn.Module) -> None:
        self.trunk = trunk
        # transformers renamed past_key_values to cache in 5.x; accept both generations
        self._cache_arg = (
            "cache" if "cache" in inspect.signature(trunk.forward).parameters else "past_key_values"
        )
        self.reset()

    def reset(self) -> None:
        """Forget the cache (the next call re-encodes every row)."""
        self._cache: DynamicCache | None = None
        self._ids: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None
        #: the cache covers the last ``_cached`` columns; all rows are padding before them
        self._cached = 0

    def _encode(
        self, ids: torch.Tensor, mask: torch.Tensor, columns: int | None = None
    ) -> tuple[torch.Tensor, DynamicCache, int]:
        """Encode the last ``columns`` columns (default: from the first non-padding column).

        Without ``columns`` the cache is the decoder's new one, which later steps extend;
        with it, rows re-encoded to be copied into the current cache.
        """
        # a new cache has room to grow to the whole window and then slide a quarter of it
        # before its columns move to the front; rows to be copied into it need no more
        width = ids.shape[1]
        capacity = width + max(16, width // 4) if columns is None else columns
        if columns is None:
            used = mask.any(0).nonzero()
            columns = ids.shape[1] - int(used[0]) if len(used) else 1
        ids, mask = ids[:, -columns:], mask[:, -columns:]
        out = self.trunk(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            use_cache=True,
            **{self._cache_arg: _window_cache(capacity)},
        )
        return out.last_hidden_state[:, -1], out[self._cache_arg], columns

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden state of the newest (last) token of each window, shape (batch, width)."""
        ids, mask = input_ids.long(), attention_mask.long()
        if self._cache is None or self._ids is None or self._ids.shape != ids.shape:
            hidden, self._cache, self._cached = self._encode(ids, mask)
            self._ids, self._mask, self._hidden = ids, mask, hidden
            return hidden
        previous_mask = cast(torch.Tensor, self._mask)  # set with self._ids at every call
        if torch.equal(ids, self._ids) and torch.equal(mask, previous_mask):
            return (
                self._hidden
            )  # asked again about the same windows (e.g. policy and KL share a model)
        continues = (ids[:, :-1] == self._ids[:, 1:]).all(1) & (
            mask[:, :-1] == previous_mask[:, 1:]
        ).all(1)
        continues &= mask[:, -1] == 1
        # padding columns left of the cache were never encoded: the cache grows by the new
        # token until it spans the whole window, then slides (the oldest position leaves)
        columns = min(self._cached + 1, ids.shape[1])
        if columns == self._cached:
            # a real token leaving the window changes every later key (positions, context):
            # only rows whose oldest position is padding can slide
            continues &= previous_mask[:, 0] == 0
        restart = (~continues).nonzero().squeeze(1)
        if len(restart) == len(ids) or bool(mask[restart, : ids.shape[1] - columns].any()):
            hidden, self._cache, self._cached = self._encode(ids, mask)
        else:
            if columns == self._cached:
                # a DynamicCache's layers: DynamicLayer or _WindowLayer, with key and value tensors
                layers: list[Any] = self._cache.layers
                for layer in layers:
                    if isinstance(layer, _WindowLayer):
                        layer.drop_oldest()
                    else:
                        layer.keys = layer.keys[:, :, 1:]
                        layer.values = layer.values[:, :, 1:]
            out = self.trunk(
                input_ids=ids[:, -1:],
                attention_mask=mask[:, -columns:],
                position_ids=position_ids_from_mask(mask[:, -columns:])[:, -1:],
                use_cache=True,
                **{self._cache_arg: self._cache},
            )
            hidden = out.last_hidden_state[:, -1]
            self._cached = columns
            if restart.numel():
                fresh_hidden, fresh, _ = self._encode(ids[restart], mask[restart], columns)
                hidden[restart] = fresh_hidden
                cache_layers: list[Any] = self._cache.layers
                fresh_layers: list[Any] = fresh.layers
                for layer, new in zip(cache_layers, fresh_layers, strict=True):
                    layer.keys[restart] = new.keys
                    layer.values[restart] = new.values
        self._ids, self._mask, self._hidden = ids, mask, hidden
        return hidden
