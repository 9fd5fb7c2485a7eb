"""Laying out token sequences for Hugging Face models: left padding and its position ids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["left_pad", "position_ids_from_mask"]


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions of a left-padded batch: 0 at the first real token (padding gets 0 too).

    Hugging Face models need them in plain ``forward`` calls on left-padded input
    (``generate`` computes them itself).

    >>> position_ids_from_mask(torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])).tolist()
    [[0, 0, 0, 1], [0, 0, 1, 2]]
    """
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def left_pad(
    sequences: Sequence[Sequence[int] | np.ndarray], pad_id: int, width: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` int64 arrays with each sequence right-aligned.

    >>> ids, mask = left_pad([[5, 6], [7]], pad_id=0)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6], [0, 7]], [[1, 1], [0, 1]])
    """
    width = max((len(s) for s in sequences), default=0) if width is None else width
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for i, sequence in enumerate(sequences):
        n = len(sequence)
        if n > width:
            raise ValueError(f"sequence {i} has {n} tokens, more than the width {width}")
        if n:
            ids[i, width - n :] = np.asarray(sequence, dtype=np.int64)
            mask[i, width - n :] = 1
    return ids, mask
