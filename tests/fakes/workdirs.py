"""Tiny work dirs in the pipeline's layout, built from real components (SynthDerm images, the preprocessed cache,
template notes), and the demo config shrunk for a test: for tests/train/ and tests/evaluate/."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from dermlib.config import get_config
from dermlib.data.labels import CLASS_NAMES
from dermlib.data.preprocess import build_cache
from dermlib.data.schema import save_manifest
from dermlib.data.synthderm import SYNTH_SOURCES, generate
from dermlib.notes.synth import synthesize

INTERNAL = [n for n, s in SYNTH_SOURCES.items() if s["partition"] == "internal"]
GRID_INTERNAL = INTERNAL[:2]  # the grid's work dir: two internal sources and one external
GRID_EXTERNAL = [n for n, s in SYNTH_SOURCES.items() if s["partition"] == "external"][:1]


def make_work_dir(root: Path, n_per_source: int = 40, size: int = 32, seed: int = 0) -> Path:
    """A work dir in the pipeline's layout from real SynthDerm images: manifest with splits, the real uint8 cache
    (dermlib.data.build_cache), and M notes.

    Notes are template notes built from the (synthetic) label and attributes, as strategy M would write them; one
    training note is marked failed so the run must cope with samples without a note.
    """
    work = root / "work"
    manifest = generate(root / "synthderm", n_per_source=n_per_source, seed=seed, image_size=64, sources=INTERNAL)
    rng = np.random.default_rng(seed)
    manifest["split"] = rng.choice(["train", "val", "test"], size=len(manifest), p=[0.6, 0.2, 0.2])
    manifest["partition"] = "internal"
    save_manifest(manifest, work / "manifest.parquet")
    build_cache(manifest, work / "cache", size=size)
    rows = []
    for i, r in manifest.iterrows():
        attrs = json.loads(r["attributes"])
        note = (f"A {r['age']:.0f} year old {r['sex']} patient with a {attrs['border']} lesion on the {r['site']}, "
                f"colours {', '.join(attrs['colors'])}. Clinical impression: {CLASS_NAMES[r['label']]}.")
        rows.append({"sample_id": r["sample_id"], "strategy": "M", "note": note,
                     "status": "failed" if i == 0 else "ok"})
    (work / "notes").mkdir()
    pd.DataFrame(rows).to_parquet(work / "notes" / "notes.parquet")
    return work


def tiny_cfg(work: Path, **train: object) -> dict:
    """The demo profile shrunk for a test: few epochs, small batches, the last MiniLM layer trained (token path)."""
    overrides = {"work_dir": str(work), "train.epochs": 2, "train.batch_size": 16, "train.max_text_len": 48,
                 "train.lr": 1e-3, "train.patience": 5, "train.train_last_n_text_layers": 1,
                 "train.note_features": None}  # the committed note store holds none of these notes
    overrides.update({f"train.{k}": v for k, v in train.items()})
    return get_config("demo", overrides)


def make_grid_work_dir(root: Path, n_per_source: int = 30, size: int = 32) -> Path:
    """Pipeline layout from real components for the evaluation tests: SynthDerm images of two internal sources and
    one external (test only), a preprocessed cache and template (M) notes, one external note failed."""
    work, sources = root / "work", GRID_INTERNAL + GRID_EXTERNAL
    manifest = generate(root / "synthderm", n_per_source=n_per_source, seed=1, image_size=48, sources=sources)
    rng = np.random.default_rng(0)
    manifest["partition"] = manifest["source"].map({n: SYNTH_SOURCES[n]["partition"] for n in sources})
    manifest["split"] = np.where(manifest["partition"] == "external", "test",
                                 rng.choice(["train", "val", "test"], size=len(manifest), p=[0.5, 0.2, 0.3]))
    save_manifest(manifest, work / "manifest.parquet")
    build_cache(manifest, work / "cache", size=size)
    notes = synthesize(manifest, "M")
    # An external sample without a note must drop out of retrieval only.
    failed = manifest.loc[manifest["partition"] == "external", "sample_id"].iloc[0]
    notes.loc[notes["sample_id"] == failed, "status"] = "failed"
    (work / "notes").mkdir()
    notes.to_parquet(work / "notes" / "notes.parquet")
    return work
