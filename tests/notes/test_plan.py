"""Planning the LLM jobs (dermlib.notes.plan): one generation per image, a key that covers what is sent to the LLM
(and nothing rendered locally), `limit`, and settings that say how to fix what is missing."""

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
def test_a_key_covers_what_is_sent_and_nothing_rendered_locally(strategy: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27, item 7: a comment in any template changes no key; an edit of what is sent (the strategy's prompt,
    its schema, the vocabulary) asks again; an edit of what is rendered locally (the M template, the [render]
    section) asks nothing and reaches the stored notes."""
    manifest, cache = make_manifest(3), tmp_path / "c.sqlite"
    prompts = tmp_path / "prompts"
    shutil.copytree(strategies.PROMPT_DIR, prompts)
    monkeypatch.setattr(strategies, "PROMPT_DIR", prompts)
    settings = note_settings(cache_path=cache, base_url="http://127.0.0.1:9", model="fake-model")

    def reload() -> None:  # templates are read once per process: read them again after an edit
        strategies.vocabulary.cache_clear()
        strategies._base.cache_clear()
        strategies._option_order.cache_clear()

    def pending() -> int:
        reload()
        return count_pending(manifest, strategy, settings)

    with FakeOpenAI() as fake:
        first = synthesize(manifest, strategy, llm_args(fake, cache))
    assert pending() == 0
    own = get_strategy(strategy)
    for name in own.files:  # a comment line anywhere
        original = (prompts / name).read_text()
        if name.endswith(".txt"):
            (prompts / name).write_text(original + "\n# edited\n")
            assert pending() == 0, name
            (prompts / name).write_text(original)
    sent = prompts / f"{own.template}.{own.version}.txt"  # what the LLM receives: asked again
    original = sent.read_text()
    sent.write_text(original.replace("[user]\n", "[user]\nPlease be brief.\n", 1))
    assert pending() == 3
    sent.write_text(original)
    assert pending() == 0
    if own.output == "json":
        schema = prompts / f"{own.template}.schema.{own.version}.json"
        original = schema.read_text()
        schema.write_text(original.replace("\n", "\n ", 1))  # whitespace in the schema file: the same schema sent
        assert pending() == 0
        schema.write_text(original)
        m = prompts / "m.v2.txt"  # rendered here, never sent: the stored answers are rendered again
        m.write_text(m.read_text().replace("presents with a skin lesion.", "presents with a new lesion."))
        assert pending() == 0
        reload()
        again = synthesize(manifest, strategy, settings)
        assert again["note"].str.contains("presents with a new lesion.").all() and again["cached"].all()
        assert (again["note"].str.replace("a new lesion", "a skin lesion") == first["note"]).all()
    reload()


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
