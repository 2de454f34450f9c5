"""Learning curves (dermlib.train.plots): the mean over seeds, Img apart, and faded where few seeds still train."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from dermlib.config import get_config  # noqa: E402
from dermlib.train import plots  # noqa: E402
from dermlib.train.plots import seeds_per_epoch  # noqa: E402


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
    assert "curves faint, no band" in " ".join(t.get_text() for t in counts.texts)  # said where it shows
    assert list(seeds_per_epoch(histories)["seeds"]) == [3, 3, 3, 3, 1, 1]
    plt.close("all")


def test_learning_curves_use_the_strategy_colours_and_mark_the_controls(cfg: dict) -> None:
    from matplotlib.colors import to_rgb

    from dermlib.plotstyle import STRATEGY_COLOURS

    histories = plots.stack_histories({("M+G", 0): _history(3, 0.0, True), ("M", 0): _history(3, 0.1, True)})
    fig = plots.learning_curves(histories, cfg)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert to_rgb(lines["M"].get_color()) == to_rgb(STRATEGY_COLOURS["M"])
    assert to_rgb(lines["M+G"].get_color()) == to_rgb(STRATEGY_COLOURS["M+G"])
    assert lines["M+G"].get_marker() not in (None, "None", "") and lines["M"].get_marker() in (None, "None", "")
    legend = [t.get_text() for t in fig.axes[3].get_legend().get_texts()]
    assert legend == ["M (1 seed)", "M+G (1 seed, control)"]
    plt.close("all")
