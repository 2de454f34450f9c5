"""Notebook 01 (data) end to end under papermill with tiny parameters: what it records, writes and draws."""

from __future__ import annotations

import pytest

from dermlib.data.schema import read_manifest
from dermlib.data.synthderm import SYNTH_SOURCES
from dermlib.notebook import read_records
from tests.conftest import TINY_OVERRIDES


@pytest.mark.slow
def test_notebook_01_records(tiny_pipeline) -> None:
    tiny_pipeline.run("01")
    rec = read_records(tiny_pipeline.work_dir, "01_data")
    n = int(TINY_OVERRIDES["data.n_per_source"])
    size = int(TINY_OVERRIDES["data.image_size"])
    expected = {name: n if spec["partition"] == "internal" else n // 2 for name, spec in SYNTH_SOURCES.items()}
    assert rec["per_source"] == expected
    assert rec["n_images"] == sum(expected.values()) == rec["n_cached"] + rec["n_skipped"]
    assert rec["n_skipped"] == 0 and rec["synthetic"] is True
    assert rec["cache_shape"] == [rec["n_images"], size, size, 3]
    assert rec["per_partition"] == {"internal": 6 * n, "external": 5 * (n // 2)}
    assert rec["per_split"]["test"] > 5 * (n // 2) and rec["per_split"]["train"] > rec["per_split"]["val"]
    assert rec["crop_methods"].get("otsu", 0) > 0 and rec["crop_methods"].get("bbox", 0) > 0
    manifest = read_manifest(tiny_pipeline.work_dir / "manifest.parquet")
    assert len(manifest) == rec["n_images"] and manifest["split"].notna().all()
    for name in ("01_counts_class_source", "01_metadata_completeness", "01_gallery", "01_preprocessing_crops"):
        assert (tiny_pipeline.figures_dir / f"{name}.png").stat().st_size > 5_000
