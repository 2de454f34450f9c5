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
