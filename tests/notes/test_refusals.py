"""Requests the server refuses, against the fake OpenAI-protocol server: a model it does not serve (404), a schema
it rejects (400) and a refused key (401/403) stop a run after `stop_after_permanent` in a row with one message
naming the strategy, the model and the fix, storing nothing for them; what each backend is sent
(`max_completion_tokens` for OpenAI, `max_tokens` elsewhere, OpenAI's strict schema subset); the answer's model and
system fingerprint kept per note, older cache files migrated on their first write only; and the committed demo
caches still hold every note and class description the demo asks for."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from dermlib.config import REPO_ROOT, get_config
from dermlib.notes import synthesize
from dermlib.notes.cache import ANSWER_COLUMNS, NoteCache
from dermlib.notes.engine import LLMAuthError, LLMRejectedError
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.notes import SECRET, llm_args, make_manifest

PAPER_MODEL = "gpt-4o-mini-2024-07-18"


def _stored(cache: Path) -> int:
    with NoteCache(cache) as db:
        return db.count()


def test_a_model_the_server_does_not_serve_stops_after_three_and_stores_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite"
    with FakeOpenAI(models={"gpt-6-luna"}) as fake:
        with pytest.raises(LLMRejectedError) as info:
            synthesize(make_manifest(12), "P3", llm_args(fake, cache, backend="openai", model=PAPER_MODEL,
                                                         concurrency=1))
        assert fake.counts["chat"] == 3  # stopped at once: not 12 notes walked one by one
    message = str(info.value)
    assert "P3" in message and PAPER_MODEL in message and "HTTP 404" in message and "nothing was stored" in message
    assert "2027-01-14" in message and "--set notes.model=" in message and "differ from the paper" in message
    assert SECRET not in message and _stored(cache) == 0
    with FakeOpenAI(models={"gpt-6-luna"}) as fake:  # the fix: a model the server serves; the same rows are asked
        out = synthesize(make_manifest(12), "P3", llm_args(fake, cache, backend="openai", model="gpt-6-luna"))
    assert (out["status"] == "ok").all() and fake.counts["chat"] == 12


def test_a_schema_the_server_rejects_stops_the_same_way(tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite"
    with FakeOpenAI(strict_schemas=True) as fake:  # vLLM's request carries M+P2's full schema (minLength)
        with pytest.raises(LLMRejectedError, match=r"M\+P2 .*HTTP 400.*minLength.*is not permitted.*--check"):
            synthesize(make_manifest(8), "M+P2", llm_args(fake, cache, backend="vllm", concurrency=2,
                                                          stop_after_permanent=2))
        assert fake.counts["chat"] <= 3
    assert _stored(cache) == 0


def test_openai_is_sent_the_strict_subset_and_answers_are_still_checked_against_the_full_schema(tmp_path: Path
                                                                                              ) -> None:
    with FakeOpenAI(strict_schemas=True, rule=lambda n, body: "invalid_schema" if n == 1 else None) as fake:
        out = synthesize(make_manifest(4), "M+P2", llm_args(fake, tmp_path / "c.sqlite", backend="openai"))
    assert (out["status"] == "ok").all() and out.attrs["stats"]["errors"] == {"schema violation at (root)": 1}
    sent = fake.chat_bodies[0]["response_format"]["json_schema"]["schema"]
    assert "minLength" not in str(sent) and sent["properties"]["colors"]["minItems"] == 1  # minItems is supported


def test_a_refused_key_stops_at_once_naming_strategy_and_model(tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite"
    with FakeOpenAI(api_key="sk-another-key-entirely") as fake:
        with pytest.raises(LLMAuthError, match=r"M\+P1 with model 'fake-model'.*HTTP 401.*OPENAI_API_KEY"):
            synthesize(make_manifest(6), "M+P1", llm_args(fake, cache, concurrency=1))
    with FakeOpenAI(rule=lambda n, body: "403") as fake:
        with pytest.raises(LLMAuthError, match="HTTP 403"):
            synthesize(make_manifest(6), "P3", llm_args(fake, cache, concurrency=1))
        assert fake.counts["chat"] == 1  # the first refusal stops the run
    assert _stored(cache) == 0


def test_a_lone_refusal_among_good_answers_is_that_notes_failure(tmp_path: Path) -> None:
    with FakeOpenAI(rule=lambda n, body: "400_echo" if n in (1, 2) else None) as fake:
        out = synthesize(make_manifest(5), "P3", llm_args(fake, tmp_path / "c.sqlite", concurrency=1))
    assert list(out["status"]).count("failed") == 2 and list(out["status"]).count("ok") == 3
    with NoteCache(tmp_path / "c.sqlite") as db:
        assert db.count("failed") == 2 and db.count("ok") == 3


def test_openai_gets_max_completion_tokens_and_local_servers_max_tokens(tmp_path: Path) -> None:
    sent = {}
    for backend in ("openai", "llamacpp", "vllm"):
        with FakeOpenAI() as fake:
            synthesize(make_manifest(2), "P3", llm_args(fake, tmp_path / f"{backend}.sqlite", backend=backend))
        sent[backend] = fake.chat_bodies[0]
    assert sent["openai"]["max_completion_tokens"] == 160 and "max_tokens" not in sent["openai"]
    for backend in ("llamacpp", "vllm"):
        assert sent[backend]["max_tokens"] == 160 and "max_completion_tokens" not in sent[backend]


def test_served_model_and_fingerprint_are_stored_per_note(tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite"
    with FakeOpenAI(fingerprint="fp_44709d6fcb") as fake:
        out = synthesize(make_manifest(3), "M+P1", llm_args(fake, cache))
    with sqlite3.connect(cache) as db:
        rows = db.execute("SELECT served_model, system_fingerprint FROM notes").fetchall()
    assert (out["status"] == "ok").all() and rows == [("fake-model", "fp_44709d6fcb")] * 3


def _committed_copy(name: str, tmp_path: Path) -> Path:
    source = REPO_ROOT / "data" / name
    if not source.exists():
        pytest.skip(f"{source} is not here")
    copy = tmp_path / name
    shutil.copy(source, copy)  # never written in place
    return copy


def test_an_older_cache_is_read_unchanged_and_migrated_on_its_first_write(tmp_path: Path) -> None:
    cache = _committed_copy("notes-cache-demo.sqlite", tmp_path)
    before = hashlib.sha256(cache.read_bytes()).hexdigest()
    with sqlite3.connect(cache) as db:
        key, n = db.execute("SELECT key, COUNT(*) FROM notes").fetchone()
        assert not set(ANSWER_COLUMNS) & {row[1] for row in db.execute("PRAGMA table_info(notes)")}
    with NoteCache(cache) as db:
        row = db.get_many([key])[key]
        assert row["status"] == "ok" and row["served_model"] is None and row["system_fingerprint"] is None
    assert hashlib.sha256(cache.read_bytes()).hexdigest() == before  # opening and reading change no byte
    with NoteCache(cache) as db:
        db.put({**row, "key": "new", "served_model": "smollm2", "system_fingerprint": "b4000"})
        assert db.get_many([key, "new"])["new"]["served_model"] == "smollm2" and db.count() == n + 1
        assert db.get_many([key])[key] == row  # the older row: every column as it was, NULL in the new ones


def test_the_committed_demo_caches_hold_every_note_and_description_the_demo_asks_for(tmp_path: Path) -> None:
    """What notebook 02 checks before it asks nothing of the LLM: none of this change moved a demo key."""
    from dermlib.data.schema import read_manifest
    from dermlib.notes.descriptions import config_classes, description_jobs, description_styles
    from dermlib.notes.plan import NoteSettings
    from dermlib.notes.synth import count_pending

    manifest_path = REPO_ROOT / "work" / "demo" / "manifest.parquet"
    if not manifest_path.exists():
        pytest.skip("no demo manifest in work/demo (run notebook 01 of the demo)")
    notes = _committed_copy("notes-cache-demo.sqlite", tmp_path)
    described = _committed_copy("class-descriptions-demo.sqlite", tmp_path)
    cfg = get_config("demo", {"notes.cache_path": str(notes), "eval.class_descriptions_cache": str(described)})
    manifest = read_manifest(manifest_path)
    settings = NoteSettings.from_config(cfg)
    assert {s: count_pending(manifest, s, settings) for s in ("M+P1", "M+P2", "P3")} == {"M+P1": 0, "M+P2": 0, "P3": 0}
    jobs = description_jobs(cfg, config_classes(cfg), description_styles(cfg))
    with NoteCache(described) as db:
        found = db.get_many([job.key for job in jobs.values()])
    assert jobs and all(found.get(job.key, {}).get("status") in ("ok", "failed") for job in jobs.values())
