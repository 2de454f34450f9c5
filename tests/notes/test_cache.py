"""The note cache (dermlib.notes.cache): a killed run loses and duplicates nothing, and two writers on one cache do
not pay twice."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from dermlib.notes import synthesize
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.notes import llm_args, make_manifest, note_settings


@pytest.mark.slow
def test_kill_and_resume_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    n, cache, manifest_path = 30, tmp_path / "c.sqlite", tmp_path / "manifest.parquet"
    make_manifest(n).to_parquet(manifest_path)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""
        import sys, pandas as pd
        from dermlib.notes import NoteSettings, synthesize
        settings = NoteSettings(backend=None, base_url=sys.argv[2], model="fake-model", cache_path=sys.argv[3],
                                concurrency=2, timeout=60.0, max_retries=3, outage_after=10, temperature=0.7,
                                max_tokens=160, limit=None, api_key="local")
        synthesize(pd.read_parquet(sys.argv[1]), "M+P1", settings)
    """))
    with FakeOpenAI(latency=0.2) as fake:
        proc = subprocess.Popen([sys.executable, str(script), str(manifest_path), fake.base_url, str(cache)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        stored = 0
        while stored < 6 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            try:
                with sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=5) as conn:
                    stored = conn.execute("SELECT COUNT(*) FROM notes").fetchone()[0]
            except sqlite3.OperationalError:  # the file or its table does not exist yet
                pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        with sqlite3.connect(cache, timeout=5) as conn:
            kept = conn.execute("SELECT COUNT(*) FROM notes WHERE status = 'ok'").fetchone()[0]
        assert 6 <= kept < n
        before = fake.counts["chat"]
        out = synthesize(pd.read_parquet(manifest_path), "M+P1", note_settings(
            base_url=fake.base_url, model="fake-model", cache_path=cache, concurrency=4, api_key="local"))
        assert fake.counts["chat"] - before == n - kept  # only the missing notes were requested
    assert (out["status"] == "ok").all() and out["sample_id"].is_unique and out["cached"].sum() == kept
    with sqlite3.connect(cache) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM notes").fetchone() == (n, n)


def test_two_processes_on_one_cache_do_not_pay_twice(tmp_path: Path) -> None:
    manifest, cache = make_manifest(30), tmp_path / "c.sqlite"
    with FakeOpenAI(latency=0.1) as fake:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:  # two writers, each its own cache connection
            runs = list(pool.map(lambda _: synthesize(manifest, "M+P1", llm_args(fake, cache, concurrency=4)),
                                 range(2)))
        assert fake.counts["chat"] == 30
        again = synthesize(manifest, "M+P1", llm_args(fake, cache))
    assert (again["status"] == "ok").all() and again["cached"].all()
    assert sum(r.attrs["stats"]["n_rows_generated"] for r in runs) >= 30


def test_compact_keeps_the_claims_of_live_processes(tmp_path: Path) -> None:
    """Issue 27: compacting a cache (before a commit) drops its own and dead processes' claims, never the claim of a
    process that is asking for a note right now."""
    from dermlib.notes.cache import NoteCache

    path = tmp_path / "cache.sqlite"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with NoteCache(path) as cache:
            cache.claim("mine", stale_after=600)
            live = f"{cache.owner.split(':')[0]}:{sleeper.pid}:live"
            dead = f"{cache.owner.split(':')[0]}:{2 ** 22 + 7}:dead"  # above pid_max's default: no such process
            for owner, key in ((live, "theirs"), (dead, "orphan")):
                cache.conn.execute("INSERT INTO claims VALUES (?, ?, ?)", (key, owner, time.time()))
            cache.compact()
            left = dict(cache.conn.execute("SELECT key, owner FROM claims").fetchall())
        assert left == {"theirs": live}
    finally:
        sleeper.kill()
        sleeper.wait()
