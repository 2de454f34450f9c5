"""Notes for a profile (dermlib.notes.profile): a run that would ask the LLM for more than `notes.ask_limit` notes
or class descriptions refuses before its first request, saying how many and how long; within the limit it asks."""

from __future__ import annotations

from pathlib import Path

import pytest

from dermlib.notes.descriptions import generate_descriptions
from dermlib.notes.profile import AskLimitError, check_ask_limit, synthesize_profile
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.notes import llm_cfg, make_manifest


def test_more_notes_than_the_limit_are_refused_before_any_request(tmp_path: Path) -> None:
    manifest = make_manifest(8)
    with FakeOpenAI() as fake:
        cfg = llm_cfg(tmp_path, fake.base_url, **{"notes.ask_limit": 5, "notes.strategies": ["M", "P3"],
                                                   "notes.cache_path": "{work_dir}/notes.sqlite"})
        with pytest.raises(AskLimitError, match=r"8 notes would be asked of the LLM \(P3 8\).*notes.ask_limit is 5"):
            synthesize_profile(manifest, cfg)
        assert fake.chat_bodies == []  # nothing was asked
        cfg["notes"]["ask_limit"] = 8
        notes = synthesize_profile(manifest, cfg)
        assert len(fake.chat_bodies) >= 8 and (notes["status"] == "ok").all()
        cfg["notes"]["ask_limit"] = 0  # everything is cached now: nothing to ask, nothing refused
        assert len(synthesize_profile(manifest, cfg)) == 16


def test_more_class_descriptions_than_the_limit_are_refused(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        cfg = llm_cfg(tmp_path, fake.base_url, **{"notes.ask_limit": 3})
        with pytest.raises(AskLimitError, match="8 class descriptions would be asked"):
            generate_descriptions(cfg, ["MEL", "NV"])
        assert fake.chat_bodies == []
        cfg["notes"]["ask_limit"] = None
        assert generate_descriptions(cfg, ["MEL", "NV"])["asked"] == 8


def test_the_refusal_says_how_long_the_local_llm_would_take() -> None:
    cfg = {"notes": {"ask_limit": 50, "backend": "llamacpp", "base_url": None, "model": "smollm2-135m-instruct"}}
    check_ask_limit(cfg, {"P3": 50, "M+P2": 0}, "notes")  # at the limit: allowed
    # 2,040 P3 notes at 0.52 notes/s and 2,040 M+P2 notes at 0.12 notes/s: 1.1 h + 4.7 h
    with pytest.raises(AskLimitError, match=r"4,080 notes .*\(P3 2,040, M\+P2 2,040\): about 5\.8 h with the local"):
        check_ask_limit(cfg, {"P3": 2040, "M+P2": 2040}, "notes")
    with pytest.raises(AskLimitError, match="--set notes.ask_limit=null"):
        check_ask_limit(cfg, {"P3": 51}, "notes")
    check_ask_limit({"notes": {**cfg["notes"], "ask_limit": None}}, {"P3": 10**6}, "notes")  # no limit


def test_an_edit_that_would_buy_stored_notes_again_refuses_with_count_and_cost(tmp_path: Path) -> None:
    """Issue 27, item 7: notes stored for an earlier version of their requests are not bought again silently."""
    from dermlib.notes.profile import ReaskError

    manifest = make_manifest(60)
    with FakeOpenAI() as fake:
        cfg = llm_cfg(tmp_path, fake.base_url, **{"notes.strategies": ["M+P1"], "notes.reask_limit": 50,
                                                   "notes.ask_limit": None, "notes.model": "gpt-4o-mini-2024-07-18",
                                                   "notes.cache_path": "{work_dir}/notes.sqlite"})
        assert (synthesize_profile(manifest, cfg)["status"] == "ok").all()  # a first run: nothing stored is stale
        asked = len(fake.chat_bodies)
        cfg["notes"]["temperature"] = 0.5  # every request changes
        with pytest.raises(ReaskError, match=r"60 notes would be asked again .*M\+P1: 60 to ask while 60 stored "
                                             r"notes match no request, about \$[0-9.]+ \(\$[0-9.]+ by Batch\)"
                                             r".*--set notes.reask_limit=null"):
            synthesize_profile(manifest, cfg)
        assert len(fake.chat_bodies) == asked  # nothing was asked
        cfg["notes"]["reask_limit"] = 60  # within the limit: asked
        assert (synthesize_profile(manifest, cfg)["status"] == "ok").all() and len(fake.chat_bodies) >= asked + 60
        cfg["notes"]["temperature"] = 0.7
        cfg["notes"]["reask_limit"] = None  # no limit
        assert (synthesize_profile(manifest, cfg)["status"] == "ok").all()
