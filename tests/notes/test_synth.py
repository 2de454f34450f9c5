"""Synthesis (dermlib.notes.synth): every LLM strategy and combination against the fake OpenAI-protocol server,
then a rerun that makes no call (combinations reuse their parts' cached notes)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dermlib.notes import get_strategy, synthesize
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.notes import llm_args, make_manifest


def test_llm_strategies_then_rerun_makes_zero_calls(tmp_path: Path) -> None:
    manifest, cache = make_manifest(8), tmp_path / "cache.sqlite"
    with FakeOpenAI() as fake:
        first = {s: synthesize(manifest, s, llm_args(fake, cache)) for s in ("M+P1", "M+P2", "P3", "M&P3", "M+P1|P3")}
        calls = fake.counts["chat"]
        again = {s: synthesize(manifest, s, llm_args(fake, cache)) for s in first}
        assert fake.counts["chat"] == calls == 3 * 8  # combos reuse their parts' cached notes
    for s, frame in first.items():
        assert list(frame["sample_id"]) == list(manifest["sample_id"]) and (frame["status"] == "ok").all()
        assert frame["template_version"].iloc[0] == get_strategy(s).template_version
        assert again[s]["cached"].all() and again[s]["note"].equals(frame["note"])
    assert first["M+P1"]["note"].str.contains("Colours: ").all()
    m_notes = synthesize(manifest, "M")["note"]
    for s in ("M+P1", "M+P2"):  # the structured strategies are "M + prompt": the row's M note comes first
        assert all(n.startswith(m + (" " if s == "M+P1" else "\n")) for n, m in zip(first[s]["note"], m_notes))
    assert first["M+P2"]["note"].str.contains("\nHistory: ").all()
    assert (first["M&P3"]["note"].str.split("\n\n").str[1] == first["P3"]["note"]).all()
    mixed = first["M+P1|P3"]["note"]
    assert ((mixed == first["M+P1"]["note"]) | (mixed == first["P3"]["note"])).all()
    assert 0 < (mixed == first["P3"]["note"]).sum() < 8
    bodies = fake.chat_bodies
    assert all(b["response_format"]["type"] == "json_schema" and b["response_format"]["json_schema"]["strict"]
               for b in bodies if "Fill" in str(b) or "JSON" in b["messages"][0]["content"])
    with sqlite3.connect(cache) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM notes").fetchone() == (24, 24)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM notes WHERE status = 'ok' AND raw IS NULL").fetchone()[0] == 0
