"""Seeing the credit: a completion with each token coloured by its token reward.

Holds :func:`credit_html`, :func:`credit_png`, :func:`credit_ansi` and
:func:`token_strings`. Positive rewards are green, negative red, the colour's
strength is the reward over the episode's largest absolute token reward.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["credit_ansi", "credit_html", "credit_png", "token_strings"]


def token_strings(token_ids: Sequence[int], tokenizer: Any = None) -> list[str]:
    """Each token's text (its id in angle brackets when there is no tokenizer)."""
    if tokenizer is None:
        return [f"<{int(t)}>" for t in token_ids]
    return [tokenizer.decode([int(t)]) for t in token_ids]


def _strengths(token_rewards: Sequence[float] | np.ndarray) -> np.ndarray:
    rewards = np.asarray(token_rewards, dtype=np.float64)
    scale = np.abs(rewards).max() if rewards.size else 0.0
    return rewards / scale if scale > 0 else np.zeros_like(rewards)


def _check(tokens: Sequence[str], token_rewards: Sequence[float] | np.ndarray) -> None:
    if len(tokens) != len(token_rewards):
        raise ValueError(f"got {len(tokens)} tokens but {len(token_rewards)} token rewards")


def _rgb(strength: float) -> tuple[int, int, int]:
    fade = int(round(255 * (1 - abs(strength))))
    return (fade, 255, fade) if strength >= 0 else (255, fade, fade)


def credit_html(tokens: Sequence[str], token_rewards: Sequence[float] | np.ndarray) -> str:
    """An HTML ``<div>`` with one ``<span>`` per token, background by reward, value on hover.

    Example:
        >>> credit_html(["good", "film"], [0.8, 0.2]).count("<span")
        2
    """
    _check(tokens, token_rewards)
    spans = []
    strengths = _strengths(token_rewards)
    for token, reward, strength in zip(tokens, token_rewards, strengths, strict=True):
        r, g, b = _rgb(strength)
        spans.append(
            f'<span title="{reward:+.4f}" style="background:rgb({r},{g},{b});'
            f'padding:0 2px;margin:0 1px">{html.escape(token)}</span>'
        )
    return '<div style="font-family:monospace;line-height:1.8">' + "".join(spans) + "</div>"


def credit_ansi(tokens: Sequence[str], token_rewards: Sequence[float] | np.ndarray) -> str:
    """Tokens with 24-bit ANSI background colours, for terminals (the ``"ansi"`` render).

    Example:
        >>> "\\x1b[48;2;" in credit_ansi(["good"], [1.0])
        True
    """
    _check(tokens, token_rewards)
    parts = []
    for token, strength in zip(tokens, _strengths(token_rewards), strict=True):
        r, g, b = _rgb(strength)
        parts.append(f"\x1b[48;2;{r};{g};{b}m\x1b[30m{token.strip() or token}\x1b[0m")
    return " ".join(parts)


def credit_png(
    tokens: Sequence[str],
    token_rewards: Sequence[float] | np.ndarray,
    path: str | Path,
    per_row: int = 12,
) -> Path:
    """Save the completion as a PNG (matplotlib), one coloured box per token; returns the path.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "credit.png")
        >>> out = credit_png(["good", "film"], [0.8, 0.2], path)
        >>> out.suffix
        '.png'
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    _check(tokens, token_rewards)
    rows = max(1, -(-len(tokens) // per_row))
    fig, ax = plt.subplots(figsize=(per_row * 0.9, rows * 0.5 + 0.3))
    ax.set_xlim(0, per_row)
    ax.set_ylim(rows, 0)
    ax.axis("off")
    for i, (token, reward, strength) in enumerate(
        zip(tokens, token_rewards, _strengths(token_rewards), strict=True)
    ):
        x, y = i % per_row, i // per_row
        color = tuple(c / 255 for c in _rgb(strength))
        ax.add_patch(Rectangle((x + 0.03, y + 0.05), 0.94, 0.9, color=color))
        ax.text(
            x + 0.5, y + 0.4, token.strip() or repr(token), ha="center", va="center", fontsize=8
        )
        ax.text(x + 0.5, y + 0.8, f"{reward:+.2f}", ha="center", va="center", fontsize=5)
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
