"""Numbers a notebook records for its tests and for the README (one JSON file per notebook in the work dir)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dermlib.workdir import WorkDir


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
