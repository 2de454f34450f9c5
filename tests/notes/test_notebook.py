"""Notebook 02 (notes) end to end under papermill with tiny parameters: what it records, writes and draws."""

from __future__ import annotations

import pandas as pd
import pytest

from dermlib.notes.local_llm import llama_cpp_available


@pytest.mark.slow
@pytest.mark.skipif(not llama_cpp_available(), reason="llama_cpp is not installed: notebook 02's tiny run generates "
                    "3 notes per LLM strategy with the local SmolLM2 server")
def test_notebook_02_tiny(tiny_pipeline) -> None:
    from dermlib.notebook import read_records

    tiny_pipeline.run("02")
    rec = read_records(tiny_pipeline.work_dir, "02_notes")
    n = rec["n_samples"]
    assert n > 0 and rec["n_rows"] == 4 * n
    assert rec["n_ok"]["M"] == n and all(1 <= rec["n_ok"].get(s, 0) <= 3 for s in ("M+P1", "M+P2", "P3"))
    assert rec["first_run_llm_calls"] >= 3 and rec["first_run_hit_rate"]["M+P1"] == 0.0
    assert rec["second_run_llm_calls"] == 0 and rec["second_run_hit_rate"] == 1.0
    assert rec["diagnosis_correct"]["M"] == 1.0 and rec["contradiction_rate"]["M"] == 0.0
    assert rec["distinct_2"]["M"] < rec["distinct_2"]["P3"]  # the template repeats itself; free text does not
    notes = pd.read_parquet(tiny_pipeline.work_dir / "notes" / "notes.parquet")
    assert len(notes) == 4 * n and set(notes["strategy"]) == {"M", "M+P1", "M+P2", "P3"}
    audit = pd.read_csv(tiny_pipeline.work_dir / "notes" / "audit_summary.csv")  # what notebook 05 reads
    assert set(audit["strategy"]) == set(notes["strategy"])
    for name in ("02_note_consistency", "02_note_hallucination"):
        assert (tiny_pipeline.figures_dir / f"{name}.png").stat().st_size > 10_000
