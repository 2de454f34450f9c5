"""Findings in words: every sentence follows from its row of comparisons.csv, and the verdict from the interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermlib import findings


def _table() -> pd.DataFrame:
    return pd.DataFrame([
        {"comparison": "M - Img", "metric": "kappa", "partition": "external", "estimate": 0.05, "ci_low": 0.01,
         "ci_high": 0.09, "p_value": 0.012, "n_seeds": 10, "n": 600},
        {"comparison": "P3 - M+P1", "metric": "map_i2t", "partition": "internal", "estimate": -0.2, "ci_low": -0.25,
         "ci_high": -0.15, "p_value": 0.001, "n_seeds": 10, "n": 438},
        {"comparison": "P3 - M+P2", "metric": "paired_cosine", "partition": "internal", "estimate": -0.01,
         "ci_low": -0.03, "ci_high": 0.02, "p_value": 0.41, "n_seeds": 10, "n": 438},
        {"comparison": "chance: M", "metric": "map_i2t", "partition": "internal", "estimate": 0.2, "ci_low": 0.19,
         "ci_high": 0.21, "p_value": np.nan, "n_seeds": 10, "n": 438},
    ])


@pytest.mark.parametrize(("low", "high", "want"), [(0.01, 0.2, "above"), (-0.2, -0.001, "below"),
                                                   (-0.1, 0.1, "not resolved"), (0.0, 0.1, "not resolved")])
def test_verdict_follows_the_interval(low: float, high: float, want: str) -> None:
    assert findings.verdict(low, high) == want


def test_answers_render_each_row_and_leave_chance_out() -> None:
    found = findings.answers(_table())
    assert list(found["comparison"]) == ["M - Img", "P3 - M+P1", "P3 - M+P2"]
    assert list(found["verdict"]) == ["above", "below", "not resolved"]
    assert found["half_width"].tolist() == pytest.approx([0.04, 0.05, 0.025])
    assert found["sentence"][0] == ("M - Img, Cohen's kappa (external): +0.050 (95 % CI +0.010 to +0.090, "
                                    "p = 0.012, 10 seeds): M is above Img.")
    assert "no difference between P3 and M+P2 is resolved" in found["sentence"][2]
    text = findings.answers_markdown(_table())
    assert text.index("**(a)") < text.index("**(b)") < text.index("**(c)")
    assert text.count("\n- ") == 3
