"""What is evaluated, read from the work dir: the held-out pool (internal test splits and every external source), a
split of the internal sources (the linear probe's training data), and a short name for a pool (`pool_id`)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from dermlib.data.preprocess import cached_pixels
from dermlib.data.schema import read_manifest
from dermlib.workdir import WorkDir


def evaluation_pool(cfg: dict[str, Any]) -> tuple[pd.DataFrame, np.ndarray]:
    """Labelled internal test rows and all external rows (manifest order by sample_id) and their cached images."""
    work = WorkDir.of(cfg)
    manifest = read_manifest(work.manifest)
    held_out = (manifest["label"].notna() & ((manifest["partition"] == "external") | (manifest["split"] == "test"))
                ).fillna(False).astype(bool)
    pool = manifest[held_out].sort_values("sample_id", kind="stable").reset_index(drop=True)
    if pool.empty:
        raise ValueError(f"{work.manifest}: no labelled test or external rows to evaluate; assign "
                         "splits and partitions in notebook 01_data")
    # images the cache skipped (unreadable) are left out of the evaluation, with a logged warning
    return cached_pixels(pool, work.cache, missing="drop", what="evaluation pool")


def pool_id(frame: pd.DataFrame) -> str:
    """A short name for exactly these samples in this order (keys the cached features of a pool)."""
    return hashlib.sha256("\n".join(frame["sample_id"].astype(str)).encode()).hexdigest()[:16]


def split_pool(cfg: dict[str, Any], split: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The labelled rows of one split of the internal sources (sample_id order) and their cached images."""
    work = WorkDir.of(cfg)
    manifest = read_manifest(work.manifest)
    rows = manifest[(manifest["split"] == split).fillna(False).astype(bool) & manifest["label"].notna()]
    rows = rows.sort_values("sample_id", kind="stable").reset_index(drop=True)
    return cached_pixels(rows, work.cache, missing="drop", what=f"{split} split")
