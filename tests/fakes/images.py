"""A small manifest with its image cache and index, for the figures of tests/data/ and tests/notes/."""

from __future__ import annotations

import numpy as np
import pandas as pd


def manifest_and_cache(n: int = 24) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """n images, MEL and NV in turn, every third external; the index lists the cache rows in reverse order."""
    rng = np.random.default_rng(1)
    labels = np.array(["MEL", "NV"] * (n // 2))
    manifest = pd.DataFrame({
        "sample_id": [f"s{i:02d}" for i in range(n)], "label": labels,
        "source": np.where(np.arange(n) % 3 == 0, "ext_a", "int_a"),
        "partition": np.where(np.arange(n) % 3 == 0, "external", "internal"),
        "modality": "dermoscopic",
        "attributes": ['{"colors": ["black", "red"], "structures": ["streaks"]}' if i % 2 else
                       '{"colors": ["light brown"], "structures": []}' for i in range(n)]})
    images = rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)
    index = pd.DataFrame({"sample_id": manifest["sample_id"][::-1].to_numpy(), "row": np.arange(n)[::-1]})
    return manifest, images, index
