"""Rows -> cached pixels (`dermlib.data.preprocess.cached_pixels`): order, and the missing-image policy."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermlib.data.preprocess import build_cache, cached_pixels, load_cache
from dermlib.data.schema import to_manifest


def _cache(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    rng = np.random.default_rng(0)
    paths = {}
    for i in range(3):
        paths[f"t/{i}"] = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(paths[f"t/{i}"])
    paths["t/missing"] = tmp_path / "missing.png"  # skipped by build_cache
    manifest = to_manifest(pd.DataFrame({"sample_id": list(paths), "source": "t", "modality": "clinical",
                                         "image_path": [str(p) for p in paths.values()], "label_raw": "nevus"}))
    build_cache(manifest, tmp_path / "cache", size=8)
    return manifest, tmp_path / "cache"


def test_cached_pixels_follow_the_rows_and_drop_or_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest, cache = _cache(tmp_path)
    images, index = load_cache(cache)
    wanted = manifest.iloc[[2, 0]].reset_index(drop=True)
    rows, pixels = cached_pixels(wanted, cache, missing="raise")
    assert list(rows["sample_id"]) == ["t/2", "t/0"] and np.array_equal(pixels, images[[2, 0]])
    with pytest.raises(ValueError, match="lacks 1 test images"):
        cached_pixels(manifest, cache, missing="raise", what="test")
    with caplog.at_level(logging.WARNING, logger="dermlib.data.preprocess"):
        rows, pixels = cached_pixels(manifest.iloc[::-1], cache, missing="drop", what="pool")
    assert list(rows["sample_id"]) == ["t/2", "t/1", "t/0"] and list(rows.index) == [0, 1, 2]
    assert np.array_equal(pixels, images[[2, 1, 0]])
    assert "pool: 1 rows have no cached image" in caplog.text
    with pytest.raises(ValueError, match="missing must be one of"):
        cached_pixels(manifest, cache, missing="ignore")
