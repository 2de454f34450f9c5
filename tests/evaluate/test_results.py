"""Results on disk (dermlib.evaluate.results): the notes' audit summary is read as notebook 02 wrote it, never
recomputed; a missing or stale one is an error that says how to write it again."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from dermlib.config import get_config
from dermlib.evaluate.results import load_audit_summary


def test_audit_summary_is_read_as_notebook_02_wrote_it(tmp_path: Path) -> None:
    cfg = get_config("demo", {"work_dir": str(tmp_path / "work")})
    notes_dir = tmp_path / "work" / "notes"
    assert load_audit_summary(cfg) is None  # no notes: nothing to audit
    notes_dir.mkdir(parents=True)
    notes = notes_dir / "notes.parquet"
    pd.DataFrame({"sample_id": ["s/1"], "strategy": ["M"], "note": ["A note."], "status": ["ok"]}).to_parquet(notes)
    with pytest.raises(FileNotFoundError, match=r"audit_summary\.csv is missing beside .*notes\.parquet: run notebook "
                                                r"02_notes again"):
        load_audit_summary(cfg)
    summary = pd.DataFrame({"strategy": ["M", "P3"], "contradiction_rate": [0.0, 0.25], "n_notes": [10, 8]})
    summary.to_csv(notes_dir / "audit_summary.csv", index=False)
    os.utime(notes, (1_000_000_000, 1_000_000_000))  # the notes first, then their audit
    pd.testing.assert_frame_equal(load_audit_summary(cfg), summary)
    os.utime(notes, None)  # notes written again after the audit: the audit is stale
    os.utime(notes_dir / "audit_summary.csv", (1_000_000_000, 1_000_000_000))
    with pytest.raises(FileNotFoundError, match=r"audit_summary\.csv is older than .*notes\.parquet"):
        load_audit_summary(cfg)
    pd.testing.assert_frame_equal(pd.read_csv(notes_dir / "audit_summary.csv"), summary)  # read, never rewritten
