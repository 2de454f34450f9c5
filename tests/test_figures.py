"""Figures: every figure function returns a Figure, one `save` writes PNG + PDF, and what is drawn is the numbers."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from dermlib import lessons, plots  # noqa: E402
from dermlib.config import get_config  # noqa: E402
from dermlib.data import figures as data_figures  # noqa: E402
from dermlib.notes import figures as note_figures  # noqa: E402
from dermlib.training_plots import seeds_per_epoch  # noqa: E402


@pytest.fixture()
def cfg(tmp_path: Path) -> dict:
    return get_config("demo", {"figures_dir": str(tmp_path / "figures")})


def _history(epochs: int, offset: float, mm: bool) -> pd.DataFrame:
    e = np.arange(1, epochs + 1, dtype=float)
    frame = pd.DataFrame({"epoch": e, "train_loss": 5 / e + offset, "val_loss": 6 / e + offset,
                          "val_kappa": 0.1 * e + offset, "train_ce_image": 2 / e + offset,
                          "val_image_loss": 2.5 / e + offset})
    if mm:
        frame = frame.assign(train_ce_text=1 / e, train_l1=0.3 / e, train_cosine=0.2 / e, train_nt_xent=4 / e)
    return frame


def _lines(ax: plt.Axes) -> dict[str, np.ndarray]:
    return {line.get_label(): np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()}


def test_save_writes_png_and_pdf_and_returns_nothing(cfg: dict, tmp_path: Path) -> None:
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    assert plots.save(fig, cfg, "x") is None
    png, pdf = plots.figure_paths(cfg, "x")
    assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"
    assert plots.SYNTHETIC_MARK in [t.get_text() for t in fig.texts]
    plots.save(fig, cfg, "x")  # saving twice stamps once
    assert [t.get_text() for t in fig.texts].count(plots.SYNTHETIC_MARK) == 1
    paper = get_config("paper", {"figures_dir": str(tmp_path / "paper")})
    fig2, _ = plt.subplots()
    plots.save(fig2, paper, "y")
    assert plots.SYNTHETIC_MARK not in [t.get_text() for t in fig2.texts]
    assert plots.source_title(cfg, "x") == "SynthDerm (synthetic): x" and plots.source_title(paper, "x") == "x"
    plt.close("all")


def test_learning_curves_draw_the_mean_over_seeds_and_keep_img_apart(cfg: dict) -> None:
    histories = plots.stack_histories({("Img", 0): _history(4, 0.0, False), ("Img", 1): _history(4, 0.2, False),
                                       ("M", 0): _history(3, 0.0, True), ("M", 1): _history(3, 0.4, True)})
    fig = plots.learning_curves(histories, cfg)
    axes = fig.axes
    ce_lines = _lines(axes[0])
    e = np.arange(1, 5, dtype=float)
    # the mean of the two Img seeds, by hand
    assert np.allclose(ce_lines["Img"], (2 / e + 2 / e + 0.2) / 2)
    total = axes[1].get_lines()
    assert len(total) == 2  # M train + val only: Img's total loss is its cross-entropy, drawn in panel 0
    assert np.allclose(total[0].get_ydata(), (5 / e[:3] + 5 / e[:3] + 0.4) / 2)
    titles = [ax.get_title() for ax in axes]
    assert any("NT-Xent" in t for t in titles) and any("L1" in t for t in titles)
    legend_texts = [t.get_text() for ax in axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert legend_texts == ["Img (2 seeds)", "M (2 seeds)"]  # one legend, for the whole figure
    with pytest.raises(ValueError, match="lacks columns"):
        plots.stack_histories({"M": _history(2, 0, True).drop(columns="val_kappa")})
    plt.close("all")


def test_learning_curves_fade_where_fewer_than_half_the_seeds_still_train(cfg: dict) -> None:
    # Img seeds stop after 4, 4 and 6 epochs: epochs 5-6 hold 1 of 3 seeds, fewer than half
    histories = plots.stack_histories({("Img", 0): _history(4, 0.0, False), ("Img", 1): _history(4, 0.3, False),
                                       ("Img", 2): _history(6, 0.6, False)})
    fig = plots.learning_curves(histories, cfg)
    lines = fig.axes[0].get_lines()
    solid = [line for line in lines if line.get_label() == "Img"][0]
    assert list(solid.get_xdata()) == [1, 2, 3, 4]  # the mean over all three seeds
    e = np.arange(1, 5, dtype=float)
    assert np.allclose(solid.get_ydata(), 2 / e + 0.3)
    faint = [line for line in lines if line.get_label() == "_few seeds"]
    assert len(faint) == 2  # train and val image loss each continue faint over epochs 4-6 (one seed)
    assert list(faint[0].get_xdata()) == [4, 5, 6] and faint[0].get_alpha() < 1
    assert np.allclose(faint[0].get_ydata()[1:], 2 / np.array([5.0, 6.0]) + 0.6)
    band = fig.axes[0].collections[0].get_paths()[0].vertices[:, 0]
    assert band.min() == 1 and band.max() == 4  # no +-sd band over the epochs with one seed
    counts = fig.axes[3]  # the seeds-still-training panel, with the one legend
    assert list(counts.get_lines()[0].get_ydata()) == [3, 3, 3, 3, 1, 1]
    assert [t.get_text() for t in counts.get_legend().get_texts()] == ["Img (3 seeds)"]
    assert "fewer than half of the seeds" in fig._suptitle.get_text()
    assert list(seeds_per_epoch(histories)["seeds"]) == [3, 3, 3, 3, 1, 1]
    plt.close("all")


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
        want = [f"chance image -> text: {plots.permutation_chance(results, 'map_i2t', partition):.2f}",
                f"chance text -> image: {plots.permutation_chance(results, 'map_t2i', partition):.2f}"]
        assert list(chance) == want and [t.get_text() for t in ax.get_legend().get_texts()] == want
    assert plots.permutation_chance(results, "paired_cosine", "external", "P3") == pytest.approx(0.605)
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
            lessons.ntxent_lesson(rng.uniform(-1, 1, (4, 4)), np.array(list("abcd")), [0.1, 1.0], cfg),
            plots.confusion(pd.DataFrame([[3, 1], [0, 4]], index=["MEL", "NV"], columns=["MEL", "NV"]), cfg, "t"),
            plots.audit_heatmap(pd.DataFrame({"strategy": ["M", "P3"], "contradiction_rate": [0.0, 0.4],
                                              "diagnosis_correct": [1.0, 0.5]}), cfg),
            lessons.ranking_strips({"q": _ranking([True, False, True])}, cfg)]
    assert all(isinstance(f, plt.Figure) for f in made)
    heat = plots.audit_heatmap(pd.DataFrame({"strategy": ["M", "P3"], "diagnosis_contradicted": [0.0, 0.1],
                                             "diagnosis_mixed": [0.0, 0.3]}), cfg)
    assert [t.get_text() for t in heat.axes[0].get_xticklabels()] == ["diagnosis_contradicted", "diagnosis_mixed"]
    assert sorted(t.get_text() for t in heat.axes[0].texts) == ["0.00", "0.00", "0.10", "0.30"]
    gallery_text = " ".join(t.get_text() for ax in made[2].axes for t in ax.texts)
    assert "x2 identical" in gallery_text  # identical notes drawn once, with their count
    plt.close("all")


def test_ntxent_figure_always_shows_the_training_temperature_and_marks_it(cfg: dict) -> None:
    sim = np.array([[0.9, 0.5, 0.1], [0.2, 0.8, 0.3], [0.1, 0.4, 0.7]])
    assert cfg["train"]["temperature"] == 0.07
    assert lessons.lesson_temperatures(cfg) == [0.07, 0.5, 1.0]
    for given in ([0.5, 1.0], None):  # the training temperature is added when not given
        fig = lessons.ntxent_lesson(sim, np.array(["a", "b", "c"]), given, cfg)
        right = fig.axes[1]  # [0] heatmap, [1] softmax bars, [2] the colour bar
        legend = [t.get_text() for t in right.get_legend().get_texts()]
        p_train = np.exp(sim[0] / 0.07) / np.exp(sim[0] / 0.07).sum()
        assert legend[0] == f"tau = 0.07 (training: train.temperature): p(own note) = {p_train[0]:.2f}"
        assert len(legend) == 3 and "training" not in legend[1] + legend[2]
        heights = [patch.get_height() for patch in right.patches[:3]]  # the first temperature's bars
        assert np.allclose(heights, p_train)
        assert right.patches[0].get_linewidth() > 0 and right.patches[3].get_linewidth() == 0  # outlined: trains
    plt.close("all")


def _ranking(relevant: list[bool]) -> pd.DataFrame:
    """A ranking as `lessons.ranking` gives one, without ties: precision at rank r = relevant in the first r / r."""
    rank = np.arange(1, len(relevant) + 1)
    return pd.DataFrame({"relevant": relevant, "rank": rank, "precision": np.cumsum(relevant) / rank})


def test_ranking_strips_show_the_whole_ranking_and_where_ap_comes_from(cfg: dict) -> None:
    relevant = [True, False, True, False, False, True]
    fig = lessons.ranking_strips({"q": _ranking(relevant)}, cfg)
    strip, curve = fig.axes[0], fig.axes[1]
    assert np.array_equal(strip.get_images()[0].get_array()[0], np.array(relevant, dtype=float))  # all 6 ranks
    dots = curve.collections[0].get_offsets()
    assert np.allclose(dots[:, 0], [1, 3, 6]) and np.allclose(dots[:, 1], [1, 2 / 3, 3 / 6])
    ap = (1 + 2 / 3 + 3 / 6) / 3
    ap_line = [line for line in curve.get_lines() if line.get_label().startswith("AP")][0]
    assert ap_line.get_ydata()[0] == pytest.approx(ap) and f"= {ap:.2f}" in ap_line.get_label()
    assert "3 relevant of 6 notes; half found by rank 3, the last at rank 6" in strip.get_title(loc="left")
    fig = lessons.ranking_strips({"q": _ranking(relevant)}, cfg, top=4)
    assert len(fig.axes[0].get_images()[0].get_array()[0]) == 4
    assert "1 relevant beyond rank 4 (ranks 6-6), not drawn" in fig.axes[0].get_title(loc="left")
    assert lessons.ranking_summary(_ranking(relevant), top=2)["beyond_ranks"] == (3, 6)
    plt.close("all")


def _manifest_and_cache(n: int = 24) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(1)
    labels = np.array(["MEL", "NV"] * (n // 2))
    manifest = pd.DataFrame({
        "sample_id": [f"s{i:02d}" for i in range(n)], "label": labels,
        "source": np.where(np.arange(n) % 3 == 0, "ext_a", "int_a"),
        "partition": np.where(np.arange(n) % 3 == 0, "external", "internal"),
        "modality": "dermoscopic",
        "attributes": ['{"colors": ["black", "red"], "structures": ["streaks"]}' if i % 2 else
                       '{"colors": ["light brown"], "structures": []}' for i in range(n)]})
    images = rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)
    index = pd.DataFrame({"sample_id": manifest["sample_id"][::-1].to_numpy(), "row": np.arange(n)[::-1]})
    return manifest, images, index


def test_class_gallery_puts_internal_left_and_external_right(cfg: dict) -> None:
    manifest, images, index = _manifest_and_cache()
    fig = data_figures.class_gallery(manifest, images, index, cfg, per_partition=2)
    grid = np.array(fig.axes).reshape(2, 4)
    assert [ax.get_title() for ax in grid[0, :2]] == ["int_a", "int_a"]
    assert [ax.get_title() for ax in grid[0, 2:]] == ["ext_a", "ext_a"]
    plt.close("all")


def test_attribute_glossary_shows_only_images_with_the_attribute(cfg: dict) -> None:
    manifest, images, index = _manifest_and_cache()
    fig = data_figures.attribute_glossary(manifest, images, index, cfg, per_value=2)
    values = [v for vs in data_figures.ATTRIBUTE_VALUES.values() for v in vs]
    grid = np.array(fig.axes).reshape(len(values), 2)
    streaks = values.index("streaks")
    shown = [ax.get_images()[0].get_array() for ax in grid[streaks] if ax.get_images()]
    with_streaks = {int(r) for sid, r in zip(index["sample_id"], index["row"]) if int(sid[1:]) % 2}
    assert len(shown) == 2 and all(any(np.array_equal(s, images[r]) for r in with_streaks) for s in shown)
    assert not grid[values.index("white")][0].get_images()  # nobody is white: the row stays empty
    plt.close("all")


def test_note_cards_mark_phrases_by_verdict() -> None:
    manifest, images, _ = _manifest_and_cache(4)
    manifest = manifest.assign(age=[55.0, 60.0, np.nan, 40.0], sex="male", site="posterior torso", fitzpatrick=np.nan)
    notes = pd.DataFrame({"sample_id": ["s01", "s01"], "strategy": ["M", "P3"], "status": "ok",
                          "note": ["A 55-year-old man, back.", "Melanoma with black dots and streaks on the leg."]})
    html = note_figures.note_cards(["s01"], manifest, notes, {"s01": images[1]})
    assert 'title="age: contradicted">55-year-old' in html  # s01 is 60
    assert 'title="structure: unsupported">dots' in html and 'title="structure: supported">streaks' in html
    assert 'title="site: contradicted">leg' in html and 'title="diagnosis: contradicted">Melanoma' in html  # s01 is NV
    assert 'title="sex: supported">man' in html
    assert html.count("data:image/png;base64,") == 1
    assert "age 60," in html and "60.0" not in html  # whole ages without a decimal point


def test_note_cards_show_every_strategy_and_mark_sex() -> None:
    manifest, images, _ = _manifest_and_cache(4)
    manifest = manifest.assign(age=54.0, sex="male", site="posterior torso", fitzpatrick=2.0)
    strategies = ["M", "M+P1", "M+P2", "P3"]
    notes = pd.DataFrame({"sample_id": "s00", "strategy": strategies, "status": "ok",
                          "note": [f"note of {s}: a 54-year-old woman; she has a lesion." for s in strategies]})
    html = note_figures.note_cards(["s00"], manifest, notes, {})
    for s in strategies:  # four strategies, four rows
        assert f"<b>{s}</b>" in html and f"note of {s}" in html
    assert html.count('title="sex: contradicted">woman') == 4 and html.count('title="sex: contradicted">she') == 4
    assert "age 54, sex male" in html and "fitzpatrick 2" in html and "(no image)" in html
    assert note_figures.shown_value(7.6) == "7.6" and note_figures.shown_value([]) == "none"


def test_the_figures_notebook_imports_no_torch() -> None:
    import subprocess
    import sys

    code = ("import sys; import dermlib.results, dermlib.lessons, dermlib.plots, dermlib.tables, dermlib.findings, "
            "dermlib.notes.audit, dermlib.notebook; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
