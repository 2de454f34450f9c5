"""What every notebook does first (one display style, paths shown relative) and the numbers a notebook records for
its tests and for the README (one JSON file per notebook in `<work_dir>/records/`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from dermlib.config import shown  # noqa: F401 (notebooks import shown from here)
from dermlib.plotstyle import setup_style
from dermlib.workdir import WorkDir


def setup() -> None:
    """Rounded numbers (3 decimals), full cell text (no silent truncation), the one plot style, quiet logging."""
    pd.set_option("display.precision", 3)
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.width", 160)
    setup_style()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _path(work_dir: str | Path, notebook: str) -> Path:
    return WorkDir(work_dir).records / f"{notebook}.json"


def record(work_dir: str | Path, notebook: str, **values: Any) -> dict[str, Any]:
    """Merge `values` into the notebook's record file and return the whole record."""
    path = _path(work_dir, notebook)
    path.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(values)
    path.write_text(json.dumps(current, indent=2, sort_keys=True, default=float))
    return current


def read_records(work_dir: str | Path, notebook: str) -> dict[str, Any]:
    """The values a notebook recorded ({} when it has not run)."""
    path = _path(work_dir, notebook)
    return json.loads(path.read_text()) if path.exists() else {}
