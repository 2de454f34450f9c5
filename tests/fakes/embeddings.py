"""Toy paired embeddings for the lessons of tests/train/ and tests/evaluate/: three classes around random centres,
image and text each with unit noise; the first 30 rows internal, the rest external."""

from __future__ import annotations

import numpy as np


def toy_embeddings(n: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """n paired image and text embeddings (6-d) with labels, sample ids, partitions and notes."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(["MEL", "NV", "BCC"], n)
    centres = {"MEL": rng.normal(size=6), "NV": rng.normal(size=6), "BCC": rng.normal(size=6)}
    img = np.stack([centres[c] for c in labels]) + rng.normal(scale=1.0, size=(n, 6))
    txt = np.stack([centres[c] for c in labels]) + rng.normal(scale=1.0, size=(n, 6))
    return {"image_emb": img, "text_emb": txt, "label": labels, "sample_id": np.array([f"s{i}" for i in range(n)]),
            "partition": np.where(np.arange(n) < 30, "internal", "external"),
            "note": np.array([f"note {i}" for i in range(n)])}
