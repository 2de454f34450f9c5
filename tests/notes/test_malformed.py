"""A malformed answer is a recorded failure of its note, never a crash (issue 27, item 6): a lone surrogate in the
answer's JSON string and bytes that are not UTF-8 fail that note with the reason while the others are made, a re-run
neither crashes nor asks again; control and bidi characters are cleaned out of a note (`dermlib.notes.sanitize`)."""

from __future__ import annotations

import sqlite3
import unicodedata
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from dermlib.notes import synthesize
from dermlib.notes.sanitize import clean_text, storable
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.notes import llm_args, make_manifest


def _only_the_melanoma(fault: str) -> Any:
    """A rule that answers every request for the first row (the one melanoma of `make_manifest(4)`) with `fault`."""
    return lambda n, body: fault if "diagnosed as melanoma" in body["messages"][-1]["content"] else None


@pytest.mark.parametrize("fault, reason", [("surrogate", "not valid Unicode text: a lone surrogate U+D800"),
                                           ("bad_utf8", "not valid UTF-8")])
def test_an_answer_that_is_not_text_fails_its_note_and_the_run_goes_on(tmp_path: Path, fault: str, reason: str) -> None:
    manifest, cache = make_manifest(4), tmp_path / "c.sqlite"
    with FakeOpenAI(rule=_only_the_melanoma(fault)) as fake:
        out = synthesize(manifest, "P3", llm_args(fake, cache, max_retries=1, backoff_base=0.0))
        assert list(out["status"]) == ["failed", "ok", "ok", "ok"]
        assert reason in out.at[0, "error"] and out.at[0, "n_attempts"] == 2 and pd.isna(out.at[0, "note"])
        calls = fake.counts["chat"]
        again = synthesize(manifest, "P3", llm_args(fake, cache, max_retries=1, backoff_base=0.0))
        assert fake.counts["chat"] == calls and again["cached"].all()  # stored as failed: not asked first again
        retried = synthesize(manifest, "P3", llm_args(fake, cache, max_retries=0, retry_failed=True))
        assert fake.counts["chat"] == calls + 1 and retried.at[0, "status"] == "failed"  # asked on request, no crash
    with sqlite3.connect(cache) as db:
        rows = db.execute("SELECT status, error, raw FROM notes").fetchall()
    assert sorted(r[0] for r in rows) == ["failed", "ok", "ok", "ok"]
    failed = next(r for r in rows if r[0] == "failed")
    assert reason in failed[1] and "\ud800" not in (failed[2] or "")  # the raw answer kept as its escape


def test_control_and_bidi_characters_are_cleaned_out_of_a_note(tmp_path: Path) -> None:
    with FakeOpenAI(rule=_only_the_melanoma("control_chars")) as fake:
        out = synthesize(make_manifest(4), "P3", llm_args(fake, tmp_path / "c.sqlite"))
    assert (out["status"] == "ok").all()
    note = out.at[0, "note"]
    assert "café" in note and "\r" not in note and "Second\tline" in note and "\n" in note
    assert not [c for c in note if unicodedata.category(c) == "Cc" and c not in "\n\t"]
    assert not set(note) & set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    assert note == unicodedata.normalize("NFC", note) and "e\u0301" not in note


@pytest.mark.parametrize("text, cleaned", [
    ("plain note", "plain note"),
    ("line\r\nbreak\rhere", "line\nbreak\nhere"),
    ("tab\tand\nnewline kept", "tab\tand\nnewline kept"),
    ("nul\x00 bell\x07 esc\x1b[0m del\x7f c1\x85", "nul bell esc[0m del c1"),
    ("rtl \u202eoverride\u202c and \u2067isolate\u2069 \u200emark\u200f", "rtl override and isolate mark"),
    ("\ufeffbom", "bom"),
    ("cafe\u0301", "caf\u00e9"),
    ("emoji \U0001f9d1\u200d\u2695\ufe0f kept", "emoji \U0001f9d1\u200d\u2695\ufe0f kept"),
])
def test_clean_text_rules(text: str, cleaned: str) -> None:
    assert clean_text(text) == (cleaned, None)


def test_a_lone_surrogate_cannot_be_cleaned_and_is_stored_as_its_escape() -> None:
    text, problem = clean_text("half \udc80 a pair")
    assert problem == "answer is not valid Unicode text: a lone surrogate U+DC80 at character 5"
    assert text == "half \\udc80 a pair" and text.encode("utf-8")
    assert storable("ok \U0001f600") == "ok \U0001f600"
