"""Planning the LLM jobs (dermlib.notes.plan): one generation per image, a key that covers every template and
parameter a note depends on, `limit`, and settings that say how to fix what is missing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dermlib.notes import get_strategy, strategies, synthesize
from dermlib.notes.synth import count_pending
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.notes import llm_args, make_manifest, note_settings


def test_p3_is_one_generation_per_image(tmp_path: Path) -> None:
    manifest = make_manifest(16)  # 4 classes x 4 samples: the P3 prompt repeats, the generation does not
    with FakeOpenAI() as fake:
        out = synthesize(manifest, "P3", llm_args(fake, tmp_path / "c.sqlite"))
    assert fake.counts["chat"] == 16 and (out["status"] == "ok").all() and out["note"].nunique() == 16
    assert len({b["seed"] for b in fake.chat_bodies}) == 16


@pytest.mark.parametrize("strategy", ["M+P1", "M+P2", "P3"])
def test_editing_any_template_a_note_depends_on_changes_its_key(strategy: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    manifest, cache = make_manifest(3), tmp_path / "c.sqlite"
    prompts = tmp_path / "prompts"
    shutil.copytree(strategies.PROMPT_DIR, prompts)
    monkeypatch.setattr(strategies, "PROMPT_DIR", prompts)

    def pending() -> int:  # a key holds the digest of the strategy's files, read from PROMPT_DIR on every call
        strategies.vocabulary.cache_clear()
        return count_pending(manifest, strategy, note_settings(cache_path=cache, base_url="http://127.0.0.1:9",
                                                               model="fake-model"))

    with FakeOpenAI() as fake:
        synthesize(manifest, strategy, llm_args(fake, cache))
    assert pending() == 0
    for name in get_strategy(strategy).files:
        original = (prompts / name).read_text()
        (prompts / name).write_text(original.replace("\n", "\n ", 1) if name.endswith(".json") else original + "\n# edited\n")
        assert pending() == 3, name  # the edit is only whitespace or a comment, and still no old note is reused
        (prompts / name).write_text(original)
        assert pending() == 0, name
    strategies.vocabulary.cache_clear()


def test_changed_parameters_or_limit_only_request_what_is_new(tmp_path: Path) -> None:
    manifest, cache = make_manifest(6), tmp_path / "c.sqlite"
    with FakeOpenAI() as fake:
        part = synthesize(manifest, "M+P2", llm_args(fake, cache, limit=2))
        assert fake.counts["chat"] == 2 and (part["status"] == "ok").sum() == 2
        assert (part["status"] == "skipped").sum() == 4 and part.loc[part["status"] == "skipped", "note"].isna().all()
        full = synthesize(manifest, "M+P2", llm_args(fake, cache))
        assert fake.counts["chat"] == 6 and full["cached"].sum() == 2
        synthesize(manifest, "M+P2", llm_args(fake, cache, max_tokens=200))  # new parameters: new keys
        assert fake.counts["chat"] == 12


def test_llm_strategy_without_model_or_key_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="cache_path"):
        synthesize(make_manifest(1), "P3", note_settings(model="m"))
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        synthesize(make_manifest(1), "P3", note_settings(model="gpt-4o-mini", cache_path=tmp_path / "c.sqlite"))


@pytest.mark.parametrize("field, value, needs", [
    ("max_retries", -1, "notes.max_retries=-1: must be 0 or more"),
    ("limit", -3, "notes.limit=-3: must be 0 or more"),
    ("temperature", float("nan"), "notes.temperature=NaN: must be from 0 to 2"),
    ("concurrency", 0, "notes.concurrency=0: must be greater than 0"),
    ("max_tokens", {"P3": 0}, "notes.max_tokens="),
    ("timeout", float("inf"), "notes.timeout=Infinity: must be greater than 0"),
    ("backoff_base", -0.5, "backoff_base=-0.5: must be 0 or more"),
])
def test_note_settings_made_in_code_are_checked_as_the_config_is(field: str, value: object, needs: str) -> None:
    """NoteSettings built directly (a notebook exercise, `dataclasses.replace`) get the config's value checks."""
    import dataclasses

    with pytest.raises(ValueError, match=f"^{needs.replace('+', '[+]')}"):
        note_settings(**{field: value})
    with pytest.raises(ValueError, match=f"^{needs.replace('+', '[+]')}"):
        dataclasses.replace(note_settings(), **{field: value})
