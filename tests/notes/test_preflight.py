"""The notes pre-flight (`python -m dermlib.notes --check`, dermlib.notes.preflight) against the fake OpenAI-protocol
server acting as OpenAI (the models it serves, strict schemas refused as OpenAI refuses them): one real request
per LLM strategy, pending count and cost, the retirement notice, one message and exit 1 on failure; and every
strategy's request schema as sent to OpenAI inside its documented strict subset (dermlib.notes.wire)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from dermlib.config import get_config
from dermlib.data.schema import save_manifest
from dermlib.notes.__main__ import main
from dermlib.notes.cache import NoteCache
from dermlib.notes.models import MODELS, PRICES, RETIRED, retirement_notice
from dermlib.notes.preflight import check_notes
from dermlib.notes.strategies import get_strategy, option_order, response_format
from dermlib.notes.wire import sent_format, strict_problems
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.notes import SECRET, llm_cfg, make_manifest

PAPER_MODEL = "gpt-4o-mini-2024-07-18"
TODAY = dt.date(2026, 12, 7)


def _paper(tmp: Path, base_url: str, **extra: object) -> dict:
    return get_config("paper", {"work_dir": str(tmp / "work"), "notes.base_url": base_url,
                                "notes.cache_path": str(tmp / "c.sqlite"), "notes.max_retries": 0, **extra})


def test_paper_profile_pins_the_snapshot_and_the_table_keeps_no_retired_price() -> None:
    assert get_config("paper")["notes"]["model"] == PAPER_MODEL
    assert MODELS[PAPER_MODEL].shutdown == MODELS["gpt-4o-mini"].shutdown == dt.date(2027, 1, 14)
    assert not set(RETIRED) & set(PRICES) and "gpt-4.1-nano" in RETIRED
    notice = retirement_notice(PAPER_MODEL, TODAY)
    assert notice and "2027-01-14 (38 days" in notice and "--set notes.model=" in notice and "paper's" in notice
    assert "was shut down" in (retirement_notice(PAPER_MODEL, dt.date(2027, 1, 15)) or "")
    assert retirement_notice("smollm2-135m-instruct", TODAY) is None


@pytest.mark.parametrize("name", ["M+P1", "M+P2"])
def test_every_request_schema_sent_to_openai_is_inside_the_strict_subset(name: str) -> None:
    strategy = get_strategy(name)
    options = option_order("synthderm_a/000")
    planned = response_format(strategy, "openai", options)
    sent = sent_format("openai", planned)
    assert strict_problems(sent["json_schema"]["schema"]) == [] and sent["json_schema"]["strict"] is True
    if name == "M+P2":  # the hashed request keeps the richer constraints (checked after the answer); the wire not
        assert any("'minLength' is not supported" in p for p in strict_problems(planned["json_schema"]["schema"]))
    for backend in ("vllm", "ollama", "llamacpp"):  # other backends: the planned request, the very same object
        fmt = response_format(strategy, backend, options)
        assert sent_format(backend, fmt) is fmt


def test_the_strict_checker_names_what_openai_refuses() -> None:
    ok = {"type": "object", "properties": {"a": {"type": "string", "format": "date"}}, "required": ["a"],
          "additionalProperties": False}
    assert strict_problems(ok) == []
    assert strict_problems({**ok, "additionalProperties": True}) == [": additionalProperties must be false"]
    assert strict_problems({**ok, "required": []}) == [": every property must be required (missing ['a'])"]
    bad = {**ok, "properties": {"a": {"type": "array", "items": {"type": "string", "format": "uri"},
                                      "uniqueItems": True}}}
    assert strict_problems(bad) == ["/properties/a: keyword 'uniqueItems' is not supported",
                                    "/properties/a/items: format 'uri' is not supported"]


def test_preflight_asks_once_per_strategy_counts_costs_and_stores_nothing(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeOpenAI(models={PAPER_MODEL}, strict_schemas=True, api_key=SECRET) as fake:
        # the fake stands in for OpenAI on 127.0.0.1: OPENAI_API_KEY goes there only where a setting names it
        cfg = _paper(tmp_path, fake.base_url, **{"notes.api_key_env": "OPENAI_API_KEY"})
        report = check_notes(cfg, make_manifest(10), today=TODAY)
        assert len(fake.chat_bodies) == 3 and all("max_completion_tokens" in b for b in fake.chat_bodies)
    assert report.ok and report.failure() is None and [c.strategy for c in report.checks] == ["M+P1", "M+P2", "P3"]
    assert all(c.pending == 10 and c.prompt_tokens > 20 and c.served_model == PAPER_MODEL for c in report.checks)
    assert all(0 < report.cost(c, batch=True) == report.cost(c) / 2 for c in report.checks)
    table = report.table()
    assert "2027-01-14 (38 days" in table and "USD with the Batch API" in table and "characters per token" in table
    with NoteCache(tmp_path / "c.sqlite") as cache:
        assert cache.count() == 0  # a check is never stored


def test_preflight_failure_is_one_message_and_exit_status_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    manifest = tmp_path / "m.parquet"
    save_manifest(make_manifest(4), manifest)
    with FakeOpenAI(models={"gpt-6-luna"}, strict_schemas=True) as fake:
        report = check_notes(_paper(tmp_path, fake.base_url), make_manifest(4), today=TODAY)
        args = ["--profile", "paper", "--manifest", str(manifest), "--check",
                "--set", f"notes.base_url={fake.base_url}", "--set", f"notes.cache_path={tmp_path / 'c.sqlite'}",
                "--set", "notes.max_retries=0"]
        assert main(args) == 1
        failed = capsys.readouterr()
        assert main([*args, "--set", "notes.model=gpt-6-luna", "--strategies", "P3"]) == 0
        passed = capsys.readouterr()
    assert not report.ok and all("HTTP 404" in (c.error or "") for c in report.checks)
    assert report.failure().startswith(f"M+P1 with model '{PAPER_MODEL}'") and "2 more strategies" in report.failure()
    assert failed.err.count("notes check failed:") == 1 and "--set notes.model=" in failed.err
    assert "FAILED" in failed.out and SECRET not in failed.out + failed.err
    assert "notes check passed" in passed.out and "no price for 'gpt-6-luna'" in passed.out
    with NoteCache(tmp_path / "c.sqlite") as cache:
        assert cache.count() == 0


def test_preflight_without_a_key_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        check_notes(get_config("paper", {"work_dir": str(tmp_path)}), make_manifest(2))


def test_preflight_before_a_synthderm_manifest_exists_still_checks_the_requests(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        report = check_notes(llm_cfg(tmp_path, fake.base_url, **{"notes.cache_path": str(tmp_path / "c.sqlite")}))
        assert len(fake.chat_bodies) == 3  # M+P1, M+P2, P3 of the demo's notes.strategies (templates ask nothing)
    assert report.ok and all(c.pending is None for c in report.checks) and "no manifest yet" in report.table()
    assert all(report.cost(c) is None for c in report.checks) and report.notice is None  # a local model: no shutdown
