"""What every notebook does first: one display style (rounded numbers, wrapped text) and paths shown relative."""

from __future__ import annotations

import logging

import pandas as pd

from dermlib.config import shown  # noqa: F401 (notebooks import shown from here)
from dermlib.plots import setup_style


def setup() -> None:
    """Rounded numbers (3 decimals), full cell text (no silent truncation), the one plot style, quiet logging."""
    pd.set_option("display.precision", 3)
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.width", 160)
    setup_style()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
