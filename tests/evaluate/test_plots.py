"""Evaluation figures (dermlib.evaluate.plots): the confusion matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from dermlib.config import get_config  # noqa: E402
from dermlib.evaluate import plots  # noqa: E402


@pytest.fixture()
def cfg(tmp_path: Path) -> dict:
    return get_config("demo", {"figures_dir": str(tmp_path / "figures")})


def test_confusion_returns_a_figure(cfg: dict) -> None:
    fig = plots.confusion(pd.DataFrame([[3, 1], [0, 4]], index=["MEL", "NV"], columns=["MEL", "NV"]), cfg, "t")
    assert isinstance(fig, plt.Figure)
    plt.close("all")
