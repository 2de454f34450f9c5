"""The LLM engine (dermlib.notes.engine) against the fake OpenAI-protocol server: every fault retried and counted,
timeouts, recorded failures, concurrency, hostile servers and outages, and the API key kept out of errors and cache
(the failure policy: transient failures are never final, an outage stops early, bugs are raised, never stored)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dermlib.notes import synthesize
from dermlib.notes.cache import NoteCache
from dermlib.notes.engine import LLMAuthError, LLMOutageError, scrub
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.notes import SECRET, llm_args, make_manifest


def test_every_fault_is_retried_counted_and_retry_after_honoured(tmp_path: Path) -> None:
    faults = ["429", "500", "malformed_body", "malformed_json", "invalid_schema", "truncated", "refusal"]
    with FakeOpenAI(faults=faults, retry_after="1") as fake:
        start = time.perf_counter()
        out = synthesize(make_manifest(1), "M+P1", llm_args(fake, tmp_path / "c.sqlite", max_retries=8, concurrency=1))
        elapsed = time.perf_counter() - start
    assert out.at[0, "status"] == "ok" and out.at[0, "n_attempts"] == len(faults) + 1 == fake.counts["chat"]
    assert elapsed >= 1.0  # waited for Retry-After: 1
    errors = out.attrs["stats"]["errors"]
    assert errors["HTTP 429 rate limited"] == 1 and errors["HTTP 500"] == 1 and errors["refused"] == 1
    assert errors["malformed JSON"] == 1 and errors["truncated JSON (finish_reason=length)"] == 1
    retry_seeds = [b["seed"] for b in fake.chat_bodies]
    assert retry_seeds == sorted(retry_seeds) and len(set(retry_seeds)) == len(retry_seeds)  # a new seed per try


def test_timeouts_are_retried(tmp_path: Path) -> None:
    with FakeOpenAI(faults=["slow"], slow_seconds=3.0) as fake:
        out = synthesize(make_manifest(1), "P3", llm_args(fake, tmp_path / "c.sqlite", timeout=0.5))
    assert out.at[0, "status"] == "ok" and out.at[0, "n_attempts"] == 2
    assert out.attrs["stats"]["errors"] == {"timeout": 1}


def test_exhausted_retries_are_recorded_failures_not_crashes(tmp_path: Path) -> None:
    manifest, cache = make_manifest(3), tmp_path / "c.sqlite"
    with FakeOpenAI(rule=lambda n, body: "invalid_schema") as fake:
        out = synthesize(manifest, "M+P1", llm_args(fake, cache, max_retries=2))
        assert (out["status"] == "failed").all() and out["note"].isna().all()
        assert (out["n_attempts"] == 3).all() and fake.counts["chat"] == 9
        assert out["error"].str.startswith("schema violation").all()
        again = synthesize(manifest, "M+P1", llm_args(fake, cache, max_retries=2))
        assert fake.counts["chat"] == 9 and again["cached"].all()  # a recorded failure is not re-asked by default
        fake.rule = None
        fixed = synthesize(manifest, "M+P1", llm_args(fake, cache, retry_failed=True))
    assert (fixed["status"] == "ok").all() and fake.counts["chat"] == 12


def test_api_key_never_reaches_cache_or_errors(tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite"
    with FakeOpenAI(rule=lambda n, body: "400_echo") as fake:  # the server echoes the Authorization header
        out = synthesize(make_manifest(2), "M+P1", llm_args(fake, cache))
    assert (out["status"] == "failed").all() and out["error"].str.contains("Bearer").all()
    assert not out["error"].str.contains(SECRET).any()
    with FakeOpenAI(api_key="sk-the-right-one") as fake:  # wrong key: 401 with the key echoed in the body
        with pytest.raises(LLMAuthError) as info:
            synthesize(make_manifest(2), "P3", llm_args(fake, cache))
    assert SECRET not in str(info.value) and SECRET not in repr(info.value) and "OPENAI_API_KEY" in str(info.value)
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("c.sqlite*"))
    assert len(stored) > 0 and SECRET.encode() not in stored


def test_concurrency_overlaps_requests(tmp_path: Path) -> None:
    manifest = make_manifest(8)
    with FakeOpenAI(latency=0.25) as fake:
        t0 = time.perf_counter()
        synthesize(manifest, "P3", llm_args(fake, tmp_path / "a.sqlite", concurrency=1))
        serial = time.perf_counter() - t0
        t0 = time.perf_counter()
        synthesize(manifest, "P3", llm_args(fake, tmp_path / "b.sqlite", concurrency=8))
        parallel = time.perf_counter() - t0
    assert serial >= 8 * 0.25 and parallel < serial / 3


# -- hostile servers and outages ------------------------------------------------------------------------------
def test_a_dripping_answer_times_out_within_the_deadline(tmp_path: Path) -> None:
    with FakeOpenAI(faults=["drip"], drip_seconds=1.0) as fake:
        start = time.perf_counter()
        out = synthesize(make_manifest(1), "P3", llm_args(fake, tmp_path / "c.sqlite", timeout=1.0, max_retries=0))
        elapsed = time.perf_counter() - start
    assert elapsed < 10 and out.at[0, "status"] == "failed" and out.at[0, "error"].startswith("timeout")
    with NoteCache(tmp_path / "c.sqlite") as cache:
        assert cache.count("transient") == 1 and cache.count("failed") == 0  # never final


@pytest.mark.parametrize("fault, reason", [("html", "not a chat completion"), ("int_content", "answer content is int"),
                                           ("huge", "over the bound")])
def test_odd_200_answers_are_recorded_not_crashes(fault: str, reason: str, tmp_path: Path) -> None:
    with FakeOpenAI(rule=lambda n, body: fault) as fake:
        out = synthesize(make_manifest(2), "P3", llm_args(fake, tmp_path / "c.sqlite", max_retries=1))
    assert (out["status"] == "failed").all() and out["error"].str.contains(reason).all(), out["error"].tolist()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("c.sqlite*"))
    assert len(stored) < 200_000  # a 2 MB answer is not stored


def test_outage_stops_early_and_a_plain_rerun_resumes(tmp_path: Path) -> None:
    manifest, cache = make_manifest(40), tmp_path / "c.sqlite"
    with FakeOpenAI(rule=lambda n, body: "drop" if n > 6 else None) as fake:  # the server goes down after 6 notes
        start = time.perf_counter()
        with pytest.raises(LLMOutageError, match="transient errors.*re-run"):
            synthesize(manifest, "M+P1", llm_args(fake, cache, concurrency=2, max_retries=1, outage_after=4))
        assert time.perf_counter() - start < 30 and fake.counts["chat"] < 40
    with NoteCache(cache) as stored:
        ok_before = stored.count("ok")
        assert ok_before >= 4 and stored.count("failed") == 0
    with FakeOpenAI() as fake:  # back up: no --retry-failed needed
        out = synthesize(manifest, "M+P1", llm_args(fake, cache, concurrency=2))
        assert fake.counts["chat"] == 40 - ok_before
    assert (out["status"] == "ok").all()


def test_a_bug_in_our_own_request_path_is_raised_not_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import openai.resources.chat.completions as completions

    async def broken(self, **kwargs):  # stands for a bug in dermlib's request code
        raise TypeError("create() got an unexpected keyword argument 'sede'")

    monkeypatch.setattr(completions.AsyncCompletions, "create", broken)
    with FakeOpenAI() as fake:
        with pytest.raises(TypeError, match="unexpected keyword"):
            synthesize(make_manifest(2), "P3", llm_args(fake, tmp_path / "c.sqlite", api_key="x"))
    with NoteCache(tmp_path / "c.sqlite") as cache:
        assert cache.count() == 0


@pytest.mark.parametrize("key", ["x", "EMPTY", "ollama", SECRET])
def test_the_key_is_scrubbed_by_exact_match_without_mangling(key: str) -> None:
    text = f"unexpected keyword near EMPTYish ollama-server; Bearer {key} was sent"
    out = scrub(text, key)
    assert key not in out.split() and "Bearer ***" in out
    assert "unexpected keyword" in out and "EMPTYish" in out and "ollama-server" in out


def test_a_key_echoed_in_a_successful_answer_never_reaches_the_cache(tmp_path: Path) -> None:
    with FakeOpenAI(rule=lambda n, body: "echo_key") as fake:
        out = synthesize(make_manifest(2), "P3", llm_args(fake, tmp_path / "c.sqlite"))
    assert (out["status"] == "ok").all() and out["note"].str.contains("Bearer \\*\\*\\*").all()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("c.sqlite*"))
    assert SECRET.encode() not in stored
