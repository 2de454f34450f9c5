"""Note figures (dermlib.notes.plots): note cards mark each audited phrase with its verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dermlib.notes import plots
from tests.fakes.images import manifest_and_cache


def test_note_cards_mark_phrases_by_verdict() -> None:
    manifest, images, _ = manifest_and_cache(4)
    manifest = manifest.assign(age=[55.0, 60.0, np.nan, 40.0], sex="male", site="posterior torso", fitzpatrick=np.nan)
    notes = pd.DataFrame({"sample_id": ["s01", "s01"], "strategy": ["M", "P3"], "status": "ok",
                          "note": ["A 55-year-old man, back.", "Melanoma with black dots and streaks on the leg."]})
    html = plots.note_cards(["s01"], manifest, notes, {"s01": images[1]})
    assert 'title="age: contradicted">55-year-old' in html  # s01 is 60
    assert 'title="structure: unsupported">dots' in html and 'title="structure: supported">streaks' in html
    assert 'title="site: contradicted">leg' in html and 'title="diagnosis: contradicted">Melanoma' in html  # s01 is NV
    assert 'title="sex: supported">man' in html
    assert html.count("data:image/png;base64,") == 1
    assert "age 60," in html and "60.0" not in html  # whole ages without a decimal point


def test_note_cards_show_every_strategy_and_mark_sex() -> None:
    manifest, images, _ = manifest_and_cache(4)
    manifest = manifest.assign(age=54.0, sex="male", site="posterior torso", fitzpatrick=2.0)
    strategies = ["M", "M+P1", "M+P2", "P3"]
    notes = pd.DataFrame({"sample_id": "s00", "strategy": strategies, "status": "ok",
                          "note": [f"note of {s}: a 54-year-old woman; she has a lesion." for s in strategies]})
    html = plots.note_cards(["s00"], manifest, notes, {})
    for s in strategies:  # four strategies, four rows
        assert f"<b>{s}</b>" in html and f"note of {s}" in html
    assert html.count('title="sex: contradicted">woman') == 4 and html.count('title="sex: contradicted">she') == 4
    assert "age 54, sex male" in html and "fitzpatrick 2" in html and "(no image)" in html
    assert plots.shown_value(7.6) == "7.6" and plots.shown_value([]) == "none"


def test_hallucination_figure_draws_a_zero_unlike_not_measurable_and_splits_by_direction(tmp_path) -> None:
    """A measured 0 is a short bar labelled "0"; NaN (not measurable) is "n/a" with no bar; the measures where
    higher is better and those where lower is better are in separate panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dermlib.config import get_config

    cfg = get_config("demo", {"figures_dir": str(tmp_path)})
    summary = pd.DataFrame({"strategy": ["M", "D", "P3"], "colors_precision": [0.0, np.nan, 0.5],
                            "colors_recall": [0.3, 0.0, 0.02], "contradiction_rate": [0.0, 0.1, np.nan],
                            "unsupported_attribute_rate": [0.2, 0.0, 0.4]})
    fig = plots.plot_hallucination(summary, cfg)
    higher, lower = fig.axes
    assert "higher is better" in higher.get_title() and "lower is better" in lower.get_title()
    assert [t.get_text() for t in higher.get_xticklabels()] == ["colour\nprecision", "colour\nrecall"]
    assert [t.get_text() for t in lower.get_xticklabels()] == ["contradicts\nmetadata", "states an\nabsent attribute"]
    bars = {p.get_gid(): p for ax in fig.axes for p in ax.patches if p.get_gid()}
    texts = {t.get_gid(): t.get_text() for ax in fig.axes for t in ax.texts if t.get_gid()}
    for ax, column, strategy in ((higher, "colors_precision", "M"), (higher, "colors_recall", "D"),
                                 (lower, "contradiction_rate", "M")):  # measured zeros: a visible stub and "0"
        assert bars[f"bar:{column}:{strategy}"].get_height() > 0 and texts[f"zero:{column}:{strategy}"] == "0"
        assert f"na:{column}:{strategy}" not in texts
    for column, strategy in (("colors_precision", "D"), ("contradiction_rate", "P3")):  # not measurable
        assert f"bar:{column}:{strategy}" not in bars and texts[f"na:{column}:{strategy}"] == "n/a"
    assert bars["bar:colors_precision:P3"].get_height() == 0.5 and "zero:colors_precision:P3" not in texts
    assert bars["bar:colors_recall:P3"].get_height() == 0.02  # a small value keeps its height, printed
    assert ".02" in [t.get_text() for t in higher.texts]
    legend = [t.get_text() for t in lower.get_legend().get_texts()]
    assert legend == ["M", "D (control)", "P3"]
    assert bars["bar:colors_recall:D"].get_hatch() and not bars["bar:colors_recall:M"].get_hatch()
    plt.close("all")
