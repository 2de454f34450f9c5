"""The notes table on disk (dermlib.notes.store): saved once, read per strategy, with errors that say what to run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dermlib.notes import load_notes, save_notes, synthesize
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.notes import llm_args, make_manifest


def test_save_and_load_notes(tmp_path: Path) -> None:
    manifest = make_manifest(4)
    with FakeOpenAI() as fake:
        frames = [synthesize(manifest, "M")] + [synthesize(manifest, "P3", llm_args(fake, tmp_path / "c.sqlite", limit=2))]
    path = save_notes(pd.concat(frames, ignore_index=True), tmp_path)
    assert path == tmp_path / "notes" / "notes.parquet"
    assert len(load_notes(tmp_path, "M")) == 4 and len(load_notes(path, "P3")) == 2
    assert load_notes(tmp_path, "M")["synthderm_a/000"].startswith("A 20-year-old man")
    with pytest.raises(KeyError, match="M\\+P1"):
        load_notes(tmp_path, "M+P1")
    with pytest.raises(FileNotFoundError, match="02_notes"):
        load_notes(tmp_path / "nowhere", "M")
