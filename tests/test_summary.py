"""The comparison table is computed correctly from a hand-made CSV."""

from __future__ import annotations

import numpy as np
import pytest

from llm_gym.experiments.summary import (
    load_curves,
    markdown_table,
    smooth,
    summarise,
    updates_to_threshold,
    write_long_csv,
)

# sparse: seed-mean curve 0, 1, 2, ..., 10 (best 10 -> threshold 9 reached at update 9)
# abc:    seed 0 reaches 9 at update 4, seed 1 at update 6; the seed mean (8.5 at update 5)
#         reaches 9 at update 6
SPARSE = {0: np.arange(11.0), 1: np.arange(11.0)}
ABC = {
    0: np.array([0, 2, 4, 6, 9, 9, 9, 9, 9, 9, 9.0]),
    1: np.array([0, 1, 2, 4, 6, 8, 9, 9, 9, 9, 9.0]),
}


@pytest.fixture
def csv_path(tmp_path):
    rows = []
    for method, runs in (("sparse", SPARSE), ("abc", ABC)):
        for seed, curve in runs.items():
            rows += [
                {"method": method, "seed": seed, "update": u, "score": float(v), "kl": 0.0}
                for u, v in enumerate(curve)
            ]
    path = tmp_path / "curves.csv"
    write_long_csv(path, rows)
    return path


def test_steps_to_threshold_on_hand_made_csv(csv_path):
    threshold, rows = summarise(load_curves(csv_path), final_window=3)
    assert threshold == pytest.approx(9.0)
    by = {r.method: r for r in rows}
    assert by["sparse"].updates_to_threshold == 9
    assert by["abc"].updates_to_threshold == 6
    assert by["abc"].ratio_to_baseline == pytest.approx(6 / 9)
    assert by["abc"].median_updates_per_seed == pytest.approx(5.0)  # median of 4 and 6
    assert by["abc"].median_ratio_per_seed == pytest.approx(np.median([4 / 9, 6 / 9]))
    assert by["abc"].seeds_reaching == 2
    assert by["abc"].paired_mean_diff == pytest.approx(
        np.mean([ABC[0].mean() - 5.0, ABC[1].mean() - 5.0])
    )
    assert by["sparse"].paired_mean_diff is None
    assert by["abc"].final == pytest.approx(9.0)
    table = markdown_table(rows)
    assert "| abc | 2 |" in table and "6 (0.67)" in table


def test_helpers():
    assert updates_to_threshold(np.array([0, 1, 3, 2]), 2.5) == 2
    assert updates_to_threshold(np.array([0, 1]), 5) is None
    np.testing.assert_allclose(smooth(np.array([0, 2, 4, 6.0]), 2), [0, 1, 3, 5])


def test_bad_csv(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("method,seed,score\nsparse,0,1.0\n")
    with pytest.raises(ValueError, match=r"lacks the columns \['update'\]"):
        load_curves(path)


def test_unreached_seeds_count_as_the_run_length_in_the_median_ratio(tmp_path):
    # sparse reaches its threshold (9) at update 9 on every seed; "stuck" reaches it on
    # seed 0 at update 2 and never on seeds 1 and 2 (11 updates each)
    stuck = {0: np.array([0, 5, 9, 9, 9, 9, 9, 9, 9, 9, 9.0]), 1: np.zeros(11), 2: np.ones(11)}
    rows = [
        {"method": method, "seed": seed, "update": u, "score": float(v)}
        for method, runs in (("sparse", {s: np.arange(11.0) for s in range(3)}), ("stuck", stuck))
        for seed, curve in runs.items()
        for u, v in enumerate(curve)
    ]
    write_long_csv(tmp_path / "c.csv", rows)
    _, summaries = summarise(load_curves(tmp_path / "c.csv"))
    by = {s.method: s for s in summaries}
    assert by["stuck"].seeds_reaching == 1
    assert by["stuck"].median_updates_per_seed == 11
    # not 2 / 9 from the one seed that reached: median of 2/9, 11/9, 11/9
    assert by["stuck"].median_ratio_per_seed == pytest.approx(11 / 9)


def test_best_within_kl_reads_scores_only_where_kl_is_within_budget():
    from llm_gym.experiments.summary import Curves, best_within_kl, kl_matched_table

    # sparse climbs in score and KL together; abc scores higher only past 4 nats
    scores = Curves(
        {
            "sparse": {0: np.array([0.0, 1, 2, 3]), 1: np.array([0.0, 1, 1, 1])},
            "abc": {0: np.array([0.0, 0.5, 5, 6]), 1: np.array([0.0, 2, 2, 9])},
        }
    )
    kls = Curves(
        {
            "sparse": {0: np.array([0.0, 1, 2, 3]), 1: np.array([0.0, 1, 2, 3])},
            "abc": {0: np.array([0.0, 2, 5, 6]), 1: np.array([0.0, 1, 3, 8])},
        }
    )
    best = best_within_kl(scores, kls, budget=4.0)
    assert best == {"sparse": {0: 3.0, 1: 1.0}, "abc": {0: 0.5, 1: 2.0}}
    # a budget below every update's KL leaves the seed out rather than inventing a score
    assert best_within_kl(scores, kls, budget=-1.0) == {"sparse": {}, "abc": {}}

    table = kl_matched_table(scores, kls, budgets=[4.0, 10.0])
    lines = table.splitlines()
    assert lines[0] == "| method | best score at KL <= 4 nats | best score at KL <= 10 nats |"
    # abc at <= 4 nats: mean(0.5, 2) = 1.25, paired (0.5 - 3, 2 - 1) -> -0.75 ± 1.75;
    # at <= 10 nats: mean(6, 9) = 7.5, paired (6 - 3, 9 - 1) -> +5.5 ± 2.5
    assert lines[3] == "| abc | 1.250 (-0.750 ± 1.750) | 7.500 (+5.500 ± 2.500) |"
    assert lines[2] == "| sparse | 2.000 | 2.000 |"
