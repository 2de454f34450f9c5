"""Paired comparisons (dermlib.evaluate.stats): vectorised kappa and weighted means against sklearn on repeated
rows, the cluster bootstrap, the seeds x clusters interval on constructed data with a known answer, comparisons as
the config declares them, with chance rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from dermlib.config import get_config
from dermlib.evaluate import stats


def test_weighted_kappa_equals_sklearn_on_the_repeated_rows() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 60)
    pred = np.where(rng.random(60) < 0.6, y, rng.integers(0, 4, 60))
    weights = rng.integers(0, 4, size=(25, 60))
    got = stats.weighted_kappa(y, pred, weights, 4)
    for row, value in zip(weights, got):
        expected = cohen_kappa_score(np.repeat(y, row), np.repeat(pred, row))
        assert value == pytest.approx(expected, abs=1e-12)
    assert stats.weighted_kappa(y, pred, np.ones((1, 60)), 4)[0] == pytest.approx(cohen_kappa_score(y, pred))
    assert np.isnan(stats.weighted_kappa(np.zeros(5, int), np.zeros(5, int), np.ones((1, 5)), 4)[0])


def test_cluster_weights_draw_whole_clusters() -> None:
    clusters = np.array(["p1", "p1", "p2", "p3", "p3", "p3", "p4"])
    weights = stats.cluster_weights(clusters, 500, seed=3)
    assert weights.shape == (500, 7)
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 3] == weights[:, 5]).all()
    # 4 clusters drawn per replicate: the weights per cluster sum to 4
    per_cluster = weights[:, [0, 2, 3, 6]]
    assert (per_cluster.sum(axis=1) == 4).all()
    assert abs(per_cluster.mean() - 1.0) < 0.05  # each cluster is drawn once per replicate on average
    rng = np.random.default_rng(3)  # reference: one replicate at a time, clusters p1..p4 as codes 0..3
    draws = [rng.integers(0, 4, 4) for _ in range(500)]
    reference = np.stack([np.bincount(row, minlength=4) for row in draws])[:, [0, 0, 1, 2, 2, 2, 3]]
    np.testing.assert_array_equal(weights, reference)
    assert stats.cluster_weights(np.array([], dtype=str), 3).shape == (3, 0)
    values = np.arange(7.0)
    assert stats.weighted_mean(values, weights[:1])[0] == pytest.approx(np.repeat(values, weights[0]).mean())


def _samples(shift: float, n_seeds: int = 6, n: int = 200, noise: float = 0.05) -> pd.DataFrame:
    """M's paired cosine is P3's plus `shift` on every image (plus seed-level noise); two images per lesion."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.8, n)
    rows = []
    for seed in range(n_seeds):
        offset = rng.normal(0, noise)
        for strategy, value in (("M", base + shift + offset), ("P3", base + offset)):
            rows.append(pd.DataFrame({"strategy": strategy, "seed": seed, "partition": "external",
                                      "sample_id": [f"s{i:03d}" for i in range(n)],
                                      "cluster": [f"l{i // 2}" for i in range(n)], "y": 0, "pred": 0,
                                      "ap_i2t": np.nan, "ap_t2i": np.nan, "cosine": value}))
    return pd.concat(rows, ignore_index=True)


def test_paired_difference_recovers_a_known_shift_and_its_null() -> None:
    found = stats.paired_difference(_samples(0.1), "paired_cosine", "M", "P3", "external", n_boot=400, n_classes=8)
    assert found["estimate"] == pytest.approx(0.1, abs=1e-9)  # the per-seed offsets cancel: the design is paired
    assert found["ci_low"] == pytest.approx(0.1, abs=1e-9) and found["ci_high"] == pytest.approx(0.1, abs=1e-9)
    assert found["p_value"] == pytest.approx(1 / 400) and found["n_seeds"] == 6 and found["n"] == 200
    null = stats.paired_difference(_samples(0.0), "paired_cosine", "M", "P3", "external", n_boot=400, n_classes=8)
    assert null["estimate"] == pytest.approx(0.0, abs=1e-12) and null["p_value"] == 1.0


def test_paired_difference_interval_covers_the_truth_under_cluster_noise() -> None:
    """Per-lesion noise in M - P3: the interval is wide enough to cover the true shift."""
    frame = _samples(0.05, n_seeds=4)
    rng = np.random.default_rng(7)
    lesion_noise = rng.normal(0, 0.1, 100)
    a = frame["strategy"] == "M"
    frame.loc[a, "cosine"] += np.tile(np.repeat(lesion_noise, 2), 4)
    found = stats.paired_difference(frame, "paired_cosine", "M", "P3", "external", n_boot=1000, n_classes=8)
    assert found["ci_low"] < 0.05 + lesion_noise.mean() < found["ci_high"]
    assert found["ci_high"] - found["ci_low"] > 0.02  # resampling lesions, not a point mass
    empty = stats.paired_difference(frame, "paired_cosine", "M", "M+P2", "external", n_boot=10, n_classes=8)
    assert empty["n_seeds"] == 0 and np.isnan(empty["estimate"])


def test_comparisons_follow_the_config_and_add_chance_rows() -> None:
    cfg = get_config("demo", {"eval.bootstrap": 50, "eval.strategies": ["M", "P3"],
                              "eval.comparisons": [["paired_cosine", "M", "P3"], ["kappa", "M", "M+P2"]],
                              "eval.comparison_partitions": ["external"]})
    results = pd.DataFrame({"strategy": ["M", "M"], "seed": [0, 1], "partition": "external", "source": "pooled",
                            "metric": "chance_paired_cosine", "value": [0.1, 0.2], "n": 200})
    table = stats.comparisons(_samples(0.1), results, cfg, 8)
    assert list(table.columns) == stats.COMPARISON_COLUMNS
    assert table["comparison"].tolist() == ["M - P3", "chance: M"]  # M - M+P2 left out: M+P2 is not in the grid
    assert table.iloc[1]["estimate"] == pytest.approx(0.15) and table.iloc[1]["metric"] == "paired_cosine"


def test_post_hoc_comparisons_come_after_the_primary_ones_and_say_so() -> None:
    cfg = get_config("demo", {"eval.bootstrap": 50, "eval.strategies": ["M", "P3"],
                              "eval.comparisons": [["paired_cosine", "M", "P3"]],
                              "eval.post_hoc_comparisons": [["paired_cosine_above_chance", "M", "P3"]],
                              "eval.comparison_partitions": ["external"]})
    samples = _samples(0.1)
    samples["cosine_lift"] = samples["cosine"] - 0.5  # P3's lift is the same 0.5 lower
    samples.loc[samples["strategy"] == "P3", "cosine_lift"] -= 0.5
    table = stats.comparisons(samples, pd.DataFrame(columns=["strategy", "seed", "partition", "source", "metric",
                                                             "value", "n"]), cfg, 8)
    assert table["comparison"].tolist() == ["M - P3", "post hoc: M - P3"]
    post_hoc = table.iloc[1]
    assert post_hoc["metric"] == "paired_cosine_above_chance"
    assert post_hoc["estimate"] == pytest.approx(table.iloc[0]["estimate"] + 0.5)
