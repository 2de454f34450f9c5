"""One figure style for every step (dermlib.plotstyle): `save` writes PNG + PDF, and stamps synthetic results."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from dermlib import plotstyle  # noqa: E402
from dermlib.config import get_config  # noqa: E402


@pytest.fixture()
def cfg(tmp_path: Path) -> dict:
    return get_config("demo", {"figures_dir": str(tmp_path / "figures")})


def test_save_writes_png_and_pdf_and_returns_nothing(cfg: dict, tmp_path: Path) -> None:
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    assert plotstyle.save(fig, cfg, "x") is None
    png, pdf = plotstyle.figure_paths(cfg, "x")
    assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"
    assert plotstyle.SYNTHETIC_MARK in [t.get_text() for t in fig.texts]
    plotstyle.save(fig, cfg, "x")  # saving twice stamps once
    assert [t.get_text() for t in fig.texts].count(plotstyle.SYNTHETIC_MARK) == 1
    paper = get_config("paper", {"figures_dir": str(tmp_path / "paper")})
    fig2, _ = plt.subplots()
    plotstyle.save(fig2, paper, "y")
    assert plotstyle.SYNTHETIC_MARK not in [t.get_text() for t in fig2.texts]
    assert plotstyle.source_title(cfg, "x") == "SynthDerm (synthetic): x" and plotstyle.source_title(paper, "x") == "x"
    plt.close("all")


def overlapping_labels(fig: plt.Figure) -> list[str]:
    """After a draw, the texts (axis labels, tick labels, titles, legend texts, figure texts) whose window extent
    overlaps the synthetic mark's; the mark must be on the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    mark = [t for t in fig.texts if t.get_text() == plotstyle.SYNTHETIC_MARK]
    assert len(mark) == 1
    box = mark[0].get_window_extent(renderer)
    texts = [t for t in fig.texts if t is not mark[0]] + ([fig._suptitle] if fig._suptitle else [])
    for ax in fig.axes:
        texts += [ax.xaxis.label, ax.yaxis.label, ax.title, *ax.get_xticklabels(), *ax.get_yticklabels(), *ax.texts]
        if ax.get_legend():
            texts += list(ax.get_legend().get_texts())
    return [t.get_text() for t in texts if t.get_visible() and t.get_text()
            and t.get_window_extent(renderer).overlaps(box)]


def test_the_mark_lies_below_every_label(cfg: dict) -> None:
    """The mark goes under the figure's tight bounding box: a long x label reaching the right edge (where a mark in
    the figure's corner would sit on it) and tick labels stay clear, however often the figure is saved."""
    fig, (ax, other) = plt.subplots(1, 2, figsize=(5, 3))
    ax.plot([0, 1], [0, 1])
    other.set_xlabel("a long x label that runs right across to the right-hand edge of the figure " * 2,
                     loc="right")
    other.set_xticks([0, 0.5, 1], ["first tick", "second tick", "third tick"], rotation=30)
    plotstyle.save(fig, cfg, "stamped")
    assert overlapping_labels(fig) == []
    mark = [t for t in fig.texts if t.get_text() == plotstyle.SYNTHETIC_MARK][0]
    renderer = fig.canvas.get_renderer()
    label_box = other.xaxis.label.get_window_extent(renderer)
    assert mark.get_window_extent(renderer).y1 < min(label_box.y0, min(t.get_window_extent(renderer).y0
                                                                       for t in other.get_xticklabels()))
    plotstyle.save(fig, cfg, "stamped")  # placed again, not added twice
    assert overlapping_labels(fig) == [] and [t.get_text() for t in fig.texts].count(plotstyle.SYNTHETIC_MARK) == 1
    plt.close("all")


def test_strategy_colours_are_fixed_and_controls_grey() -> None:
    from matplotlib.colors import to_rgb

    paper = plotstyle.strategy_colours(["Img", "M", "M+P1", "M+P2", "P3"])
    assert paper == {s: plotstyle.STRATEGY_COLOURS[s] for s in paper} and len(set(paper.values())) == 5
    # the same strategy, the same colour, whatever else a figure shows and in whichever order
    assert plotstyle.strategy_colours(["P3", "D"])["P3"] == paper["P3"]
    controls = plotstyle.strategy_colours(["D", "M+G", "M+Gs", "M&D"])
    for name, colour in controls.items():
        r, g, b = to_rgb(colour)
        assert r == g == b, name  # greys: never taken for a paper strategy
        assert plotstyle.strategy_hatch(name) and plotstyle.strategy_marker(name)
    assert len(set(controls.values())) == 4
    assert not plotstyle.strategy_hatch("M+P1") and plotstyle.strategy_marker("M+P1") is None
    # names outside the table: colourful, not grey, stable across calls, distinct within one call
    one = plotstyle.strategy_colours(["M,P3", "M&P3", "Img"])
    two = plotstyle.strategy_colours(["M&P3", "M,P3"])
    assert one["M,P3"] == two["M,P3"] and one["M&P3"] == two["M&P3"] and one["M,P3"] != one["M&P3"]
    assert not set(one.values()) - {one["Img"]} & set(plotstyle.STRATEGY_COLOURS.values())
    assert len(set(to_rgb(one["M&P3"]))) > 1
    assert plotstyle.strategy_colours(["not a strategy"])["not a strategy"] in plotstyle.EXTRA_COLOURS
    assert plotstyle.readable("map_i2t") == "mAP image→text" and plotstyle.readable("balanced_accuracy") == \
        "balanced accuracy" and plotstyle.readable("recall@5_t2i") == "recall@5 text→image"
