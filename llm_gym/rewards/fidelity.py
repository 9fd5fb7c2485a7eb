"""Credit fidelity: how much of a credit map's weight falls on the tokens that matter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["FidelityReport", "fidelity_metrics", "spearman"]


@dataclass(frozen=True)
class FidelityReport:
    """Fidelity of a credit map against ground-truth per-token relevance.

    Attributes:
        mass_ratio: weight on relevant tokens over their share of tokens (chance 1.0).
        top_hit_rate: how often the largest weight lands on a relevant token.
        top_hit_chance: the same rate for a uniformly random pick (mean token share).
        spearman: mean per-completion Spearman correlation of weights with relevance
            (chance 0.0), over completions whose relevance is not constant.
        n_completions: completions with at least one relevant token (the rest say nothing).
    """

    mass_ratio: float
    top_hit_rate: float
    top_hit_chance: float
    spearman: float
    n_completions: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"mass ratio {self.mass_ratio:.2f}x, top-1 on relevant {self.top_hit_rate:.2f} "
            f"(chance {self.top_hit_chance:.2f}), Spearman {self.spearman:.2f} "
            f"over {self.n_completions} completions"
        )


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    # ties share their mean rank
    unique, inverse = np.unique(values, return_inverse=True)
    if len(unique) < len(values):
        sums = np.bincount(inverse, weights=ranks)
        counts = np.bincount(inverse)
        ranks = (sums / counts)[inverse]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (ties get mean ranks); NaN when either side is constant."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else float("nan")


def fidelity_metrics(
    weights: Sequence[np.ndarray], relevance: Sequence[np.ndarray], threshold: float = 0.0
) -> FidelityReport:
    """Compare credit weights (one array per completion) with per-token relevance.

    A token is relevant when ``abs(relevance) > threshold``. Only completions
    with at least one relevant token count.
    """
    if len(weights) != len(relevance):
        raise ValueError(
            f"got {len(weights)} weight vectors but {len(relevance)} relevance vectors"
        )
    masses, shares, hits, correlations = [], [], [], []
    for w, r in zip(weights, relevance):
        w = np.asarray(w, dtype=np.float64)
        r = np.abs(np.asarray(r, dtype=np.float64))
        if w.shape != r.shape:
            raise ValueError(
                f"weights of shape {w.shape} do not match relevance of shape {r.shape}"
            )
        relevant = r > threshold
        if not relevant.any():
            continue
        total = w.sum()
        masses.append(w[relevant].sum() / total if total > 0 else 0.0)
        shares.append(relevant.mean())
        hits.append(bool(relevant[int(np.argmax(w))]))
        rho = spearman(w, r)
        if not np.isnan(rho):
            correlations.append(rho)
    if not masses:
        nan = float("nan")
        return FidelityReport(nan, nan, nan, nan, 0)
    return FidelityReport(
        mass_ratio=float(np.mean(masses) / np.mean(shares)),
        top_hit_rate=float(np.mean(hits)),
        top_hit_chance=float(np.mean(shares)),
        spearman=float(np.mean(correlations)) if correlations else float("nan"),
        n_completions=len(masses),
    )
