"""The Batch route (dermlib.notes.batch, `python -m dermlib.notes --batch submit|collect`) against the fake
OpenAI-protocol server's files and batches: input files cut under both limits, batch ids kept in the cache and
collected by a fresh session or process, expired and cancelled batches keep their billed answers, the error file
read and stored with its reasons, no note submitted twice, and the API key in neither the cache nor the output."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from dermlib.config import REPO_ROOT
from dermlib.data.schema import save_manifest
from dermlib.notes import synthesize
from dermlib.notes.__main__ import main
from dermlib.notes.batch import ERROR_CHARS, chunk_requests, collect_batches, submit_batches, synthesize_batch
from dermlib.notes.cache import NoteCache
from dermlib.notes.plan import NoteSettings
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.notes import SECRET, make_manifest, note_settings


def _settings(fake: FakeOpenAI, cache: Path, **kw: object) -> NoteSettings:
    """New settings on every call, as a new session builds them, pointed at the fake with the secret key."""
    return note_settings(**{"cache_path": cache, "model": "fake-model", "base_url": fake.base_url, "api_key": SECRET,
                            **kw})


def _inputs(fake: FakeOpenAI) -> dict[str, list[str]]:
    """batch id -> the custom_ids of its input file, as the server received them."""
    return {bid: [json.loads(line)["custom_id"] for line in fake.files[b["input_file_id"]]["content"].splitlines()]
            for bid, b in fake.batches.items()}


def _rows(cache: Path) -> dict[str, dict]:
    """key -> the notes row, read with plain sqlite3 (not through dermlib)."""
    with sqlite3.connect(cache) as conn:
        conn.row_factory = sqlite3.Row
        return {r["key"]: dict(r) for r in conn.execute("SELECT * FROM notes")}


def _no_secret(cache: Path, *texts: str) -> None:
    """The key is nowhere in the cache file, its WAL or the texts, not even its tail."""
    blobs = [p.read_bytes() for p in (cache, Path(f"{cache}-wal")) if p.exists()] + [t.encode() for t in texts]
    assert blobs and not any(SECRET[-12:].encode() in blob for blob in blobs)


def test_chunks_respect_both_limits_and_keep_every_line_once() -> None:
    sizes = [10, 10, 10, 30, 5, 5, 5, 5]
    chunks = chunk_requests(sizes, max_requests=3, max_bytes=33)
    assert [list(c) for c in chunks] == [[0, 1, 2], [3], [4, 5, 6], [7]]
    assert chunk_requests(sizes) == [range(0, 8)]  # OpenAI's limits: 50,000 requests, 200 MB
    with pytest.raises(ValueError, match="request 3 alone is 31 bytes"):
        chunk_requests(sizes, max_bytes=30)


def test_small_limits_make_several_batches_whose_ids_a_fresh_session_collects(tmp_path: Path) -> None:
    manifest, cache = make_manifest(7), tmp_path / "c.sqlite"
    with FakeOpenAI(batch_polls=2, api_key=SECRET) as fake:
        done = submit_batches(manifest, "M+P1", _settings(fake, cache), max_requests=3)
        assert done.batch_ids == ["batch_1", "batch_2", "batch_3"] and done.n_requests == 7
        inputs = _inputs(fake)
        every = [key for keys in inputs.values() for key in keys]
        assert [len(v) for v in inputs.values()] == [3, 3, 1] and len(set(every)) == len(every) == 7
        with NoteCache(cache) as store:  # recorded: ids, files, the keys each asks for
            recorded = store.batches(pending=True)
            assert [b["batch_id"] for b in recorded] == done.batch_ids and [b["n_requests"] for b in recorded] == [3, 3, 1]
            assert all(b["input_file_id"] and b["collected"] is None for b in recorded)
            assert store.batch_keys(done.batch_ids) == {k: bid for bid, keys in inputs.items() for k in keys}

        # a fresh session (new settings and cache objects): a first look finds them running and stores nothing
        first = collect_batches(manifest, _settings(fake, cache), timeout=0)
        assert first.running == dict.fromkeys(done.batch_ids, "in_progress") and first.ok == 0 and not first.collected
        report = collect_batches(manifest, _settings(fake, cache), poll_interval=0.01, timeout=10)
        assert report.collected == dict.fromkeys(done.batch_ids, "completed") and not report.running
        assert (report.ok, report.failed, report.unanswered) == (7, 0, 0) and fake.counts["chat"] == 7
        assert report.prompt_tokens > 0 and report.completion_tokens > 0
        with NoteCache(cache) as store:
            assert store.batches(pending=True) == [] and store.count("ok") == 7
        again = synthesize(manifest, "M+P1", _settings(fake, cache))
        assert again["cached"].all() and (again["status"] == "ok").all() and fake.counts["chat"] == 7

        # the byte limit alone: each file holds at most two of these similar lines
        line = max(len(x) for b in fake.batches.values() for x in fake.files[b["input_file_id"]]["content"].splitlines())
        by_bytes = submit_batches(manifest, "M+P1", _settings(fake, tmp_path / "c2.sqlite"), max_bytes=2 * line + 2)
    assert len(by_bytes.batch_ids) == 4 and by_bytes.n_requests == 7
    assert all(len(fake.files[fake.batches[b]["input_file_id"]]["content"]) <= 2 * line + 2 for b in by_bytes.batch_ids)


@pytest.mark.parametrize("end", ["expired", "cancelled"])
def test_an_ended_batch_keeps_its_answers_and_the_rest_is_submitted_again(tmp_path: Path, end: str) -> None:
    manifest, cache = make_manifest(5), tmp_path / "c.sqlite"
    with FakeOpenAI(batch_end={"batch_1": (end, 2)}) as fake:
        submit_batches(manifest, "P3", _settings(fake, cache))
        report = collect_batches(manifest, _settings(fake, cache), timeout=0)
        assert report.collected == {"batch_1": end} and (report.ok, report.failed, report.unanswered) == (2, 0, 3)
        assert fake.counts["chat"] == 2 and fake.batches["batch_1"]["error_file_id"]  # never-run ones listed there
        answered = set(_inputs(fake)["batch_1"][:2])
        assert {k for k, r in _rows(cache).items() if r["status"] == "ok"} == answered  # nothing else stored
        with NoteCache(cache) as store:
            (recorded,) = store.batches()
            assert recorded["status"] == end and recorded["collected"] and recorded["output_file_id"]
            assert json.loads(recorded["summary"])["unanswered"] == 3
        rest = submit_batches(manifest, "P3", _settings(fake, cache))
        assert rest.batch_ids == ["batch_2"] and set(_inputs(fake)["batch_2"]) == set(_inputs(fake)["batch_1"]) - answered
        final = collect_batches(manifest, _settings(fake, cache), timeout=0)
    assert final.collected == {"batch_2": "completed"} and final.ok == 3
    assert [r["status"] for r in _rows(cache).values()] == ["ok"] * 5


def test_the_error_file_is_read_and_every_failure_stored_scrubbed_and_bounded(tmp_path: Path) -> None:
    manifest, cache = make_manifest(7), tmp_path / "c.sqlite"
    faults = ["400_echo", "500", "echo_key", "refusal", "huge", "400_long"]  # the seventh is answered plainly
    with FakeOpenAI(faults=faults, batch_error_file=True, api_key=SECRET) as fake:
        submit_batches(manifest, "P3", _settings(fake, cache))
        report = collect_batches(manifest, _settings(fake, cache), timeout=0)
        assert fake.batches["batch_1"]["error_file_id"] and (report.ok, report.failed, report.unanswered) == (2, 5, 0)
        assert report.errors["HTTP 400 (batch request)"] == 2 and report.errors["HTTP 500 (batch request)"] == 1
        assert report.errors["refused"] == 1 and sum(report.errors.values()) == 5
        rows = [_rows(cache)[k] for k in _inputs(fake)["batch_1"]]
        assert [r["status"] for r in rows] == ["failed", "transient", "ok", "failed", "failed", "failed", "ok"]
        assert rows[0]["error"].startswith("HTTP 400 (batch request): Incorrect: Bearer ***")
        assert rows[1]["error"].startswith("HTTP 500") and "***" in rows[2]["note"]  # the echoed key, scrubbed
        assert "over the bound" in rows[4]["error"] and len(rows[4]["raw"]) <= 2000  # the 2 MB answer, not stored
        assert rows[5]["error"].startswith("HTTP 400 (batch request): Incorrect: Bearer *** detail detail")
        assert all(len(r["error"] or "") <= ERROR_CHARS for r in rows) and len(rows[5]["error"]) > ERROR_CHARS - 10
        _no_secret(cache, json.dumps(rows), repr(report))
        retried = synthesize(manifest, "P3", _settings(fake, cache))  # a transient failure is asked again at once
    assert fake.counts["chat"] == 8 and (retried["status"] == "ok").sum() == 3


def test_notes_in_a_pending_batch_are_never_submitted_twice(tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite"
    with FakeOpenAI(batch_polls=100) as fake:
        first = submit_batches(make_manifest(4), "M+P2", _settings(fake, cache))
        second = submit_batches(make_manifest(4), "M+P2", _settings(fake, cache))
        assert first.batch_ids == ["batch_1"] and second.batch_ids == [] and second.held == {"batch_1": 4}
        grown = submit_batches(make_manifest(5), "M+P2", _settings(fake, cache))  # one new row: only it is sent
    assert grown.batch_ids == ["batch_2"] and grown.held == {"batch_1": 4} and len(_inputs(fake)["batch_2"]) == 1
    assert fake.counts["batches"] == fake.counts["files"] == 2


def test_a_failed_batch_and_answers_for_other_settings_are_reported_not_lost(tmp_path: Path) -> None:
    manifest, cache = make_manifest(3), tmp_path / "c.sqlite"
    with FakeOpenAI(batch_end={"batch_1": ("failed", 0)}) as fake:
        submit_batches(manifest, "P3", _settings(fake, cache))
        refused = collect_batches(manifest, _settings(fake, cache), timeout=0)
        assert refused.collected == {"batch_1": "failed"} and refused.unanswered == 3 and len(refused.problems) == 1
        assert "batch_1 failed as a whole" in refused.problems[0] and "the input file was refused" in refused.problems[0]
        assert submit_batches(manifest, "P3", _settings(fake, cache)).batch_ids == ["batch_2"]  # free to go again
        other = collect_batches(manifest, _settings(fake, cache, temperature=0.2), timeout=0)  # other keys
        assert other.unmatched == 3 and other.ok == 0 and "match no note" in other.problems[0]
        assert not other.collected and _rows(cache) == {}  # nothing stored, the batch still pending
        right = collect_batches(manifest, _settings(fake, cache), timeout=0)
    assert right.collected == {"batch_2": "completed"} and right.ok == 3 and not right.problems


def test_synthesize_batch_fills_the_cache_the_normal_route_reads(tmp_path: Path) -> None:
    manifest, cache = make_manifest(5), tmp_path / "c.sqlite"
    with FakeOpenAI(faults=["invalid_schema"], batch_polls=2) as fake:
        settings = _settings(fake, cache)
        out = synthesize_batch(manifest, "M+P1", settings, poll_interval=0.05, timeout=10)
        assert fake.counts["files"] == 1 and fake.counts["batches"] == 1 and fake.counts["chat"] == 5
        assert fake.files["file-1"]["purpose"] == "batch"
        assert (out["status"] == "ok").sum() == 4 and out["error"].str.contains("schema").sum() == 1
        assert out.attrs["batch"]["ok"] == 4 and out.attrs["batch"]["failed"] == 1
        assert synthesize(manifest, "M+P1", settings)["cached"].all() and fake.counts["chat"] == 5
        fixed = synthesize(manifest, "M+P1", replace(settings, retry_failed=True))
    assert fake.counts["chat"] == 6 and (fixed["status"] == "ok").all()


def test_cli_submit_and_collect_resumed_by_another_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    manifest, cache = tmp_path / "m.parquet", tmp_path / "c.sqlite"
    save_manifest(make_manifest(5), manifest)
    monkeypatch.setenv("DERMLIB_TEST_KEY", SECRET)  # OPENAI_API_KEY goes to api.openai.com only
    outputs: list[str] = []

    def cli(*extra: str) -> tuple[int, str, str]:  # `python -m dermlib.notes` in this process
        code = main(base + list(extra))
        out, err = capsys.readouterr()
        outputs.extend([out, err])
        return code, out, err

    with FakeOpenAI(api_key=SECRET, batch_polls=10**6, faults=["invalid_schema"]) as fake:
        base = ["--profile", "paper", "--manifest", str(manifest), "--strategies", "M+P1", "P3",
                "--set", f"notes.cache_path={cache}", "--set", "notes.backend=vllm", "--set", "notes.model=gpt-4o-mini",
                "--set", f"notes.base_url={fake.base_url}", "--set", "notes.api_key_env=DERMLIB_TEST_KEY"]
        code, out, err = cli("--batch", "submit", "--batch-max-requests", "2")
        assert code == 0, err
        assert "M+P1: submitted 3 batches (batch_1, batch_2, batch_3), 5 requests" in out
        assert "submitted 6 batches, 10 requests" in out and fake.counts["batches"] == 6
        code, out, _ = cli("--batch", "submit")
        assert code == 0 and fake.counts["batches"] == 6
        assert "5 notes are already in pending batches batch_1 (2), batch_2 (2), batch_3 (1)" in out
        code, _, err = cli("--batch", "collect")
        assert code == 3 and "batch_1, batch_2, batch_3, batch_4, batch_5, batch_6: still in_progress, run collect " \
                              "again later" in err
        fake.batch_polls = 0  # the batches end; a new process (nothing in memory) collects them
        done = subprocess.run([sys.executable, "-m", "dermlib.notes", *base, "--batch", "collect", "--timeout", "30",
                               "--poll-interval", "0.1"], capture_output=True, text=True, timeout=120, env=os.environ)
        outputs.extend([done.stdout, done.stderr])
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert "collected 6 batches" in done.stdout and "9 notes ok, 1 failed" in done.stdout
        assert "1 x schema violation at" in done.stdout and "estimated cost $0.0" in done.stdout
        assert "estimated cost $0.0000 " not in done.stdout  # gpt-4o-mini has a price: half of it is shown
        code, out, _ = cli("--batch", "collect")
    assert code == 0 and "no pending batches" in out
    assert Counter(r["status"] for r in _rows(cache).values()) == {"ok": 9, "failed": 1}
    _no_secret(cache, *outputs)


def test_the_batch_tables_leave_an_existing_cache_and_its_notes_as_they_are(tmp_path: Path) -> None:
    committed = REPO_ROOT / "data" / "notes-cache-demo.sqlite"
    if not committed.exists():
        pytest.skip(f"{committed} is not here")
    cache = tmp_path / "demo.sqlite"
    shutil.copyfile(committed, cache)
    before = cache.read_bytes()
    with NoteCache(cache) as store:  # read only: no table made, the file byte for byte as it was
        assert store.batches() == [] and store.batch_keys(["batch_1"]) == {}
    assert cache.read_bytes() == before
    notes = _rows(cache)
    with NoteCache(cache) as store:
        store.add_batch({"batch_id": "batch_x", "strategy": "P3", "template_version": "v", "model": "m",
                         "status": "validating", "n_requests": 2, "input_file_id": "file-x"}, ["k1", "k2"])
        assert store.batch_keys(["batch_x"]) == {"k1": "batch_x", "k2": "batch_x"}
    assert _rows(cache) == notes  # every note row and key as it was
