"""Fixtures of the data tests: where the real dataset files are (../shared/datasets, or DERMLIB_SHARED)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHARED


def _shared_dir(name: str, what: str) -> Path:
    """A folder of ../shared/datasets, or skip the test with a message saying where it was looked for."""
    path = SHARED / "datasets" / name
    if not path.is_dir():
        pytest.skip(f"{what} not found at {path} (set DERMLIB_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="session")
def shared_metadata() -> Path:
    """../shared/datasets/metadata (the real metadata files); tests skip with a message when absent."""
    return _shared_dir("metadata", "real dataset metadata")


@pytest.fixture(scope="session")
def shared_samples() -> Path:
    """../shared/datasets/real-samples (a few real images); tests skip with a message when absent."""
    return _shared_dir("real-samples", "real sample images")
