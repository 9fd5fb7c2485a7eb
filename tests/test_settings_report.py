"""examples/settings_report.py: runs of one task under several settings, against hand values."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "settings_report.py"
spec = importlib.util.spec_from_file_location("settings_report", SCRIPT)
settings_report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(settings_report)


def _write(path: Path, method: str, runs: dict[int, list[float]]) -> str:
    rows = ["method,seed,update,score"]
    rows += [f"{method},{s},{u},{v}" for s, curve in runs.items() for u, v in enumerate(curve)]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_the_threshold_and_updates_follow_the_hand_computation(tmp_path):
    slow = _write(tmp_path / "a.csv", "sparse", {0: [0, 0, 1, 2], 1: [0, 0, 1, 2], 2: [9, 9, 9, 9]})
    fast = _write(tmp_path / "b.csv", "sparse", {0: [0, 2, 2, 2], 1: [0, 4, 4, 4]})
    variants = [
        settings_report.variant_runs(f"sparse slow={slow}:sparse", [0, 1]),
        settings_report.variant_runs(f"critic={fast}:sparse", [0, 1]),
    ]
    np.testing.assert_array_equal(variants[0][1], [[0, 0, 1, 2], [0, 0, 1, 2]])  # seed 2 unread
    table = settings_report.report(variants, ["sparse slow"], smoothing=1)
    # start 0, the baseline's best 2: threshold 0 + 0.9 x 2 = 1.8, reached at update 3;
    # the other variant's seed mean is 3 from update 1, seed 0 reaches 2 >= 1.8 at update 1
    assert "threshold +1.800" in table
    assert "| sparse slow | +0.750 | +0.750 | +2.000 | 3 | 3 3 |" in table
    assert "| critic | +2.250 | +2.250 | +3.000 | 1 | 1 1 |" in table


def test_a_missing_seed_or_a_bad_spec_is_named(tmp_path):
    path = _write(tmp_path / "a.csv", "sparse", {0: [0.0, 1.0]})
    with pytest.raises(SystemExit, match=r"holds no 'sparse' runs of seeds \[1\]"):
        settings_report.variant_runs(f"x={path}:sparse", [0, 1])
    with pytest.raises(SystemExit, match=r"expected LABEL=CSV:METHOD, got 'nolabel'"):
        settings_report.variant_runs("nolabel", [0])
