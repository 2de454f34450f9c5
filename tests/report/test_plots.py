"""The report's figures (dermlib.report.plots): each returns a Figure, and what is drawn is the numbers: means
over seeds with their sd, chance levels, per-image paired cosines."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from dermlib.config import get_config  # noqa: E402
from dermlib.evaluate.results import permutation_chance  # noqa: E402
from dermlib.report import plots  # noqa: E402


@pytest.fixture()
def cfg(tmp_path: Path) -> dict:
    return get_config("demo", {"figures_dir": str(tmp_path / "figures")})

CHANCE_COSINE = {("M", "internal"): 0.05, ("M", "external"): 0.15, ("P3", "internal"): 0.4, ("P3", "external"): 0.6}


def _results() -> pd.DataFrame:
    rows = []
    for strategy, base in (("Img", 0.3), ("M", 0.4), ("P3", 0.35)):
        for seed in (0, 1):
            for partition, shift in (("internal", 0.1), ("external", 0.0)):
                rows.append({"strategy": strategy, "seed": seed, "source": "pooled", "partition": partition,
                             "metric": "kappa", "value": base + shift + 0.02 * seed, "ci_low": 0, "ci_high": 1})
                if strategy != "Img":
                    chance_map = 0.2 if partition == "internal" else 0.3
                    for metric, value in (("map_i2t", 0.6), ("map_t2i", 0.5), ("chance_map_i2t", chance_map),
                                          ("chance_map_t2i", chance_map + 0.04),
                                          ("chance_paired_cosine", CHANCE_COSINE[strategy, partition])):
                        rows.append({"strategy": strategy, "seed": seed, "source": "pooled", "partition": partition,
                                     "metric": metric, "value": value + 0.01 * seed, "ci_low": np.nan,
                                     "ci_high": np.nan})
    return pd.DataFrame(rows)


def test_bars_are_means_over_seeds_with_sd_and_chance_lines(cfg: dict) -> None:
    results = _results()
    table = plots.pooled_bars(results, "kappa")
    row = table[(table["strategy"] == "M") & (table["partition"] == "internal")].iloc[0]
    assert row["value"] == pytest.approx(0.51) and row["err_low"] == pytest.approx(np.std([0.5, 0.52], ddof=1))
    assert row["bar"] == "sd over seeds"
    fig = plots.kappa_bars(results, cfg)
    assert "sd over seeds" in fig.axes[0].get_xlabel()
    fig = plots.retrieval_map_bars(results, cfg)
    # each panel draws and labels its own chance levels (mean over the two seeds), both directions
    for ax, partition, i2t in zip(fig.axes, ("internal", "external"), (0.205, 0.305)):
        chance = {line.get_label(): line.get_ydata()[0] for line in ax.get_lines() if "chance" in line.get_label()}
        assert sorted(chance.values()) == pytest.approx([i2t, i2t + 0.04])
        want = [f"chance image -> text: {permutation_chance(results, 'map_i2t', partition):.2f}",
                f"chance text -> image: {permutation_chance(results, 'map_t2i', partition):.2f}"]
        assert list(chance) == want and [t.get_text() for t in ax.get_legend().get_texts()] == want
    assert permutation_chance(results, "paired_cosine", "external", "P3") == pytest.approx(0.605)
    with pytest.raises(ValueError, match="image-only"):
        plots.retrieval_map_bars(results[results["strategy"] == "Img"], cfg)
    plt.close("all")


def test_paired_cosine_figure_prints_the_per_image_means_of_all_seeds(cfg: dict) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for strategy, centre in (("M", 0.8), ("P3", 0.3)):
        for seed in (0, 1):
            for partition in ("internal", "external"):
                cos = np.clip(rng.normal(centre, 0.05, 20), -1, 1)
                rows.append(pd.DataFrame({"strategy": strategy, "seed": seed, "partition": partition,
                                          "sample_id": [f"{partition}{i}" for i in range(20)], "cosine": cos}))
    samples = pd.concat(rows, ignore_index=True)
    fig = plots.paired_cosine_violins(samples, _results(), cfg)
    texts = [t.get_text() for t in fig.axes[0].texts]
    m = samples[samples["strategy"] == "M"]
    want = f"mean {m[m['partition'] == 'internal']['cosine'].mean():.2f} / {m[m['partition'] == 'external']['cosine'].mean():.2f}"
    assert want in texts
    # one chance segment per strategy and partition, at that strategy's own shuffled-pair cosine (mean of 2 seeds),
    # internal over the left half-violin, external over the right one
    segments = {line.get_gid(): line for line in fig.axes[0].get_lines() if str(line.get_gid()).startswith("chance:")}
    assert set(segments) == {f"chance:{s}:{p}" for s, p in CHANCE_COSINE}
    for (strategy, partition), value in CHANCE_COSINE.items():
        line = segments[f"chance:{strategy}:{partition}"]
        assert np.allclose(line.get_ydata(), value + 0.005)
        centre = ["M", "P3"].index(strategy)
        assert (max(line.get_xdata()) == pytest.approx(centre)) == (partition == "internal")
        assert f"{value + 0.005:.2f}" in texts
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[:2] == ["internal", "external"] and "shuffled pairs (chance)" in legend[2]
    plt.close("all")


def test_every_figure_function_returns_a_figure(cfg: dict) -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(["MEL", "NV", "BCC"], size=60)
    emb = {"image_emb": rng.normal(size=(60, 8)), "text_emb": rng.normal(size=(60, 8)), "label": labels}
    emb["text_emb"][0] = np.nan  # a failed note is left out of the map
    example = {"label": "MEL", "ap": 0.5, "notes": ["same note", "same note", "other " * 50],
               "note_labels": ["MEL", "MEL", "NV"], "scores": [0.9, 0.9, 0.1]}
    made = [plots.embedding_map(emb, cfg), plots.embedding_map(emb, cfg, method="tsne", max_points=25),
            plots.retrieval_gallery(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), example, cfg),
            plots.audit_heatmap(pd.DataFrame({"strategy": ["M", "P3"], "contradiction_rate": [0.0, 0.4],
                                              "diagnosis_correct": [1.0, 0.5]}), cfg)]
    assert all(isinstance(f, plt.Figure) for f in made)
    heat = plots.audit_heatmap(pd.DataFrame({"strategy": ["M", "P3"], "diagnosis_contradicted": [0.0, 0.1],
                                             "diagnosis_mixed": [0.0, 0.3]}), cfg)
    assert [t.get_text() for t in heat.axes[0].get_xticklabels()] == ["diagnosis_contradicted", "diagnosis_mixed"]
    assert sorted(t.get_text() for t in heat.axes[0].texts) == ["0.00", "0.00", "0.10", "0.30"]
    gallery_text = " ".join(t.get_text() for ax in made[2].axes for t in ax.texts)
    assert "x2 identical" in gallery_text  # identical notes drawn once, with their count
    plt.close("all")


def test_forest_draws_each_declared_row_with_its_interval_and_verdict() -> None:
    """One row per primary and control comparison, in its question's panel; the interval drawn is the row's 95 % CI
    and its colour the verdict (the one rule in dermlib.evaluate.protocol); other kinds stay out."""
    from matplotlib.colors import to_hex

    from tests.report.test_findings import _table

    table = _table()
    fig = plots.forest(table, get_config("demo"))
    panels = [ax for ax in fig.axes if ax.get_title(loc="left")]
    assert [ax.get_title(loc="left") for ax in panels] == ["(a)", "(b)", "(c)"]
    labels = [t.get_text() for ax in panels for t in ax.get_yticklabels()]
    assert len(labels) == 6 and "control: M+G − Img, κ, external" in labels and not any("chance" in x for x in labels)
    a = panels[0]
    segments = {(tuple(line.get_xdata()), to_hex(line.get_color())) for line in a.lines if len(line.get_xdata()) == 2}
    assert ((0.01, 0.09), to_hex(plots.VERDICT_COLOURS["above"])) in segments
    assert ((-0.01, 0.018), to_hex(plots.VERDICT_COLOURS["equivalent"])) in segments
    assert ((-0.02, 0.04), to_hex(plots.VERDICT_COLOURS["not resolved"])) in segments
    low, high = a.get_xlim()
    assert low == pytest.approx(-high) and high > 0.25  # symmetric around 0, every interval inside
    plt.close(fig)
    with pytest.raises(ValueError, match="no comparisons of kind"):
        plots.forest(table[table["kind"] == "chance"], get_config("demo"))
