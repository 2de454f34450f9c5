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
