"""The SynthDerm renderer (dermlib.data.synthderm_render): every declared colour and structure is drawn, in the
direction it should change the pixels, at the declared diameter."""

from __future__ import annotations

import numpy as np
import pytest

from dermlib.data.synthderm import SYNTH_SOURCES
from dermlib.data.synthderm_render import Lesion, render


def _render(colors: tuple[str, ...], structures: tuple[str, ...] = (), diameter: float = 8.0) -> tuple[
        np.ndarray, list[int]]:
    lesion = Lesion(asymmetry=0, border="regular", colors=colors, structures=structures, diameter_mm=diameter,
                    fitzpatrick=2, shape_seed=11)
    spec = {**SYNTH_SOURCES["synthderm_dermo_a"], "hair": 0.0, "ruler": 0.0, "noise": 0.0}
    return render(lesion, spec, (96, 128), np.random.default_rng(5))


def test_declared_colours_and_structures_are_drawn() -> None:
    def share(img: np.ndarray, test) -> float:
        r, g, b = (img[..., i].astype(int) for i in range(3))
        return float(test(r, g, b).mean())

    red = lambda r, g, b: (r > g + 90) & (r > b + 80)  # noqa: E731
    bluish = lambda r, g, b: (b > r + 10) & (b > g)  # noqa: E731
    dark = lambda r, g, b: (r + g + b) < 150  # noqa: E731
    plain, _ = _render(("light brown",))
    with_red, _ = _render(("light brown", "red"))
    with_blue, _ = _render(("light brown", "blue-gray"))
    with_black, _ = _render(("light brown", "black"))
    assert share(with_red, red) > share(plain, red) + 0.01
    assert share(with_blue, bluish) > share(plain, bluish) + 0.01
    assert share(with_black, dark) > share(plain, dark) + 0.01
    # each structure changes the pixels it should, in the direction it should (same lesion otherwise)
    colours = ("light brown", "dark brown", "blue-gray", "white", "red")
    base = _render(colours)[0].astype(int)
    for structure, direction in [("pigment network", -1), ("dots/globules", -1), ("streaks", -1),
                                 ("regression structures", +1), ("blue-whitish veil", +1)]:
        delta = _render(colours, (structure,))[0].astype(int).sum(axis=2) - base.sum(axis=2)
        assert (direction * delta > 60).sum() >= 8, structure
    vessels = _render(colours, ("vascular structures",))[0].astype(int)
    redder = (vessels[..., 0] - vessels[..., 1]) - (base[..., 0] - base[..., 1])
    assert (redder > 40).sum() >= 8
    _, small_box = _render(("light brown",), diameter=4.0)
    _, large_box = _render(("light brown",), diameter=10.0)
    assert (large_box[2] - large_box[0]) > 1.8 * (small_box[2] - small_box[0])
    mm_per_px = SYNTH_SOURCES["synthderm_dermo_a"]["field_mm"] / 128
    drawn_mm = (large_box[2] - large_box[0] + large_box[3] - large_box[1]) / 2 * mm_per_px
    assert drawn_mm == pytest.approx(10.0, rel=0.25)  # diameter_mm is what is drawn, at the ruler's scale
