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

from matplotlib.colors import to_rgb  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from dermlib import plotstyle  # noqa: E402
from dermlib.config import get_config  # noqa: E402
from dermlib.evaluate.results import permutation_chance  # noqa: E402
from dermlib.metrics import l2_normalise  # noqa: E402
from dermlib.notes.plots import plot_hallucination  # noqa: E402
from dermlib.report import plots  # noqa: E402
from dermlib.train import plots as train_plots  # noqa: E402
from tests.test_plotstyle import overlapping_labels  # noqa: E402


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
        want = [f"chance image → text: {permutation_chance(results, 'map_i2t', partition):.2f}",
                f"chance text → image: {permutation_chance(results, 'map_t2i', partition):.2f}"]
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
    assert [t.get_text() for t in heat.axes[0].get_xticklabels()] == ["diagnosis contradicted", "diagnosis mixed"]
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


def _bar_rgb(fig: plt.Figure, gid: str, panel: int | None = None) -> tuple[float, float, float]:
    bars = [p for ax in (fig.axes if panel is None else [fig.axes[panel]]) for p in ax.patches if p.get_gid() == gid]
    assert len(bars) == 1, gid
    return to_rgb(bars[0].get_facecolor())


def test_a_strategy_has_one_colour_in_every_figure_and_controls_are_hatched(cfg: dict) -> None:
    """M's bars (κ, retrieval mAP, note audit), its violin and its learning curve share one RGB, P3's another; the
    control D is drawn grey and hatched, the paper's strategies plain."""
    results = _results()
    results = pd.concat([results, results[results["strategy"] == "M"].assign(strategy="D")], ignore_index=True)
    kappa = plots.kappa_bars(results, cfg)
    retrieval = plots.retrieval_map_bars(results, cfg)
    audit = plot_hallucination(pd.DataFrame({"strategy": ["P3", "M", "D"], "colors_precision": [0.5, 0.6, 0.7],
                                             "contradiction_rate": [0.1, 0.2, 0.3]}), cfg)
    e = np.arange(1, 4, dtype=float)
    history = pd.DataFrame({"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "val_kappa": e / 10})
    curves = train_plots.learning_curves(train_plots.stack_histories({("P3", 0): history, ("M", 0): history,
                                                                      ("D", 0): history}), cfg)
    line_rgb = {line.get_label(): to_rgb(line.get_color()) for line in curves.axes[0].get_lines()}
    rng = np.random.default_rng(1)
    samples = pd.DataFrame({"strategy": np.repeat(["M", "P3", "D"], 20), "seed": 0, "sample_id": np.arange(60),
                            "partition": np.tile(["internal", "external"], 30), "cosine": rng.uniform(0.2, 0.9, 60)})
    violins = plots.paired_cosine_violins(samples, results, cfg)
    bodies = {}  # the left (internal) half-violin of each strategy, found by where it lies on the x axis
    for body in violins.axes[0].collections:
        xs = body.get_paths()[0].vertices[:, 0] if body.get_paths() else []
        if len(xs) and xs.max() - xs.min() > 0.05 and np.isclose(xs.max() % 1, 0):
            bodies[["M", "P3", "D"][int(round(xs.max()))]] = to_rgb(body.get_facecolor()[0])
    for strategy in ("M", "P3", "D"):
        want = to_rgb(plotstyle.STRATEGY_COLOURS[strategy])
        assert _bar_rgb(kappa, f"bar:{strategy}:internal") == pytest.approx(want)
        assert _bar_rgb(retrieval, f"bar:{strategy}:image → text", panel=1) == pytest.approx(want)
        assert _bar_rgb(audit, f"bar:colors_precision:{strategy}") == pytest.approx(want)
        assert line_rgb[strategy] == pytest.approx(want)
        assert bodies[strategy] == pytest.approx(want)
    assert to_rgb(plotstyle.STRATEGY_COLOURS["M"]) != pytest.approx(to_rgb(plotstyle.STRATEGY_COLOURS["P3"]))
    # the external bar is the same colour, lighter; the control grey and hatched
    external = _bar_rgb(kappa, "bar:M:external")
    assert all(x >= y for x, y in zip(external, to_rgb(plotstyle.STRATEGY_COLOURS["M"]))) and external != \
        pytest.approx(to_rgb(plotstyle.STRATEGY_COLOURS["M"]))
    d_rgb = to_rgb(plotstyle.STRATEGY_COLOURS["D"])
    assert d_rgb[0] == d_rgb[1] == d_rgb[2]  # a grey
    hatches = {p.get_gid(): p.get_hatch() for p in kappa.axes[0].patches if p.get_gid()}
    assert hatches["bar:D:internal"] and not hatches["bar:M:internal"] and not hatches["bar:P3:external"]
    assert "D\n(control)" in [t.get_text() for t in kappa.axes[0].get_xticklabels()]
    plt.close("all")


def test_the_kappa_figure_keeps_the_synthetic_mark_off_every_label(cfg: dict) -> None:
    fig = plots.kappa_bars(_results(), cfg)
    plotstyle.save(fig, cfg, "05_kappa_internal_external")
    assert overlapping_labels(fig) == []
    plt.close("all")


def _seed_results() -> pd.DataFrame:
    """κ of Img and M+P1 on 5 seeds sharing a large seed effect; a non-pooled row and an internal row to ignore."""
    rng = np.random.default_rng(4)
    shared = rng.normal(0, 0.05, 5)
    rows = []
    for seed in range(5):
        for strategy, base in (("Img", 0.3), ("M+P1", 0.33)):
            value = base + shared[seed] + rng.normal(0, 0.005)
            rows += [{"strategy": strategy, "seed": seed, "partition": "external", "source": "pooled",
                      "metric": "kappa", "value": value, "n": 100},
                     {"strategy": strategy, "seed": seed, "partition": "external", "source": "clinic_a",
                      "metric": "kappa", "value": 0.9, "n": 10},
                     {"strategy": strategy, "seed": seed, "partition": "internal", "source": "pooled",
                      "metric": "kappa", "value": 0.1, "n": 100}]
    return pd.DataFrame(rows)


def test_slopegraph_draws_each_seed_and_its_paired_difference(cfg: dict) -> None:
    results = _seed_results()
    pooled = results[(results["source"] == "pooled") & (results["partition"] == "external")]
    wide = pooled.pivot(index="seed", columns="strategy", values="value")
    diff = (wide["M+P1"] - wide["Img"]).to_numpy()
    fig = plots.slopegraph(results, cfg)
    left, right = fig.axes
    for seed in range(5):  # one line per seed, from Img's value to M+P1's
        line = [x for x in left.get_lines() if x.get_gid() == f"seed:{seed}"][0]
        assert list(line.get_xdata()) == [0, 1]
        assert np.allclose(line.get_ydata(), [wide.loc[seed, "Img"], wide.loc[seed, "M+P1"]])
    dots = [c for c in right.collections if c.get_gid() == "differences"][0]
    assert np.allclose(dots.get_offsets()[:, 1], diff)
    assert right.get_title() == f"M+P1 − Img, mean {diff.mean():+.3f}"
    paired, unpaired = np.std(diff, ddof=1), np.hypot(wide["Img"].std(), wide["M+P1"].std())
    assert paired < unpaired / 3  # the shared seed effect cancels in the paired difference
    legend = " ".join(t.get_text() for t in right.get_legend().get_texts())
    assert f"paired: sd {paired:.3f}" in legend and f"unpaired: sd {unpaired:.3f}" in legend
    assert np.allclose(plots.paired_values(results, "kappa", "external", ("Img", "M+P1"))["diff"], diff)
    with pytest.raises(ValueError, match="P3"):
        plots.slopegraph(results, cfg, pair=("Img", "P3"))
    plt.close("all")


def test_the_pca_map_says_the_variance_each_axis_explains(cfg: dict) -> None:
    rng = np.random.default_rng(2)
    emb = {"image_emb": rng.normal(size=(40, 6)) * [5, 2, 1, 1, 1, 1], "text_emb": rng.normal(size=(40, 6)),
           "label": rng.choice(["MEL", "NV"], 40)}
    ratio = PCA(2).fit(np.vstack([l2_normalise(emb["image_emb"]), l2_normalise(emb["text_emb"])])
                       ).explained_variance_ratio_
    fig = plots.embedding_map(emb, cfg)
    assert fig.axes[0].get_xlabel() == f"PC1 ({100 * ratio[0]:.1f} % of variance)"
    assert fig.axes[0].get_ylabel() == f"PC2 ({100 * ratio[1]:.1f} % of variance)"
    plt.close("all")
