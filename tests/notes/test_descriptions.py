"""Class descriptions for zero-shot evaluation (dermlib.notes.descriptions): written by the notes LLM through the
note engine and cache (`generate_descriptions`, on the fake OpenAI-protocol server of tests/fakes/fake_openai.py),
once per style, class and seed; read back from the cache only (`class_descriptions`), never asked for there."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dermlib.config import get_config
from dermlib.notes.cache import NoteCache
from dermlib.notes.descriptions import (class_descriptions, description_jobs, description_styles,
                                        descriptions_cache_path, generate_descriptions)
from dermlib.notes.strategies import get_strategy, render_m
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.notes import llm_cfg


def test_description_styles_follow_the_grid_and_the_cache_sits_beside_the_notes(tmp_path: Path) -> None:
    cfg = llm_cfg(tmp_path, "http://127.0.0.1:9/v1")
    assert description_styles(cfg) == ["M+P1", "P3"]
    assert description_styles({**cfg, "eval": {**cfg["eval"], "strategies": ["M+P2&P3", "M"]}}) == ["M+P2", "P3"]
    assert description_styles({**cfg, "eval": {**cfg["eval"], "class_descriptions": 0}}) == []
    # a training strategy that joins note strategies with "," (the config documents it) is read by the one grammar:
    # it used to raise "unknown strategy" at the start of run_grid; controls never ask the LLM for a description
    assert description_styles({**cfg, "eval": {**cfg["eval"], "strategies": ["Img", "M,P3", "M+P2|M+P1", "D"]}}) == \
        ["M+P1", "M+P2", "P3"]
    assert description_styles(get_config("demo", {"eval.strategies": ["Img", "M,P3", "M+G"]})) == ["P3"]
    assert descriptions_cache_path(cfg) == tmp_path / "work" / "descriptions.sqlite"
    demo = get_config("demo")
    assert descriptions_cache_path(demo).name == "class-descriptions-demo.sqlite"
    assert descriptions_cache_path(demo).parent.name == "data"  # beside data/notes-cache-demo.sqlite, not in it


def test_descriptions_are_generated_once_per_style_class_and_seed_then_read_from_the_cache(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        cfg = llm_cfg(tmp_path, fake.base_url)
        assert generate_descriptions(cfg, ["MEL", "NV"]) == {"asked": 8, "ok": 8, "failed": 0}
        assert len(fake.chat_bodies) == 2 * 2 * 2  # styles x classes x descriptions
        found = class_descriptions(cfg, ["MEL", "NV"])
        assert len(fake.chat_bodies) == 8  # reading asks nothing
        prefix = render_m({"diagnosis": "melanoma"})
        assert list(found) == ["M+P1", "P3"] and all(len(v) == 2 for s in found.values() for v in s.values())
        assert all(d.startswith(prefix + " Synthetic note ") for d in found["M+P1"]["MEL"])
        assert len(set(found["M+P1"]["MEL"])) == 2  # own seed per description
        assert all(d.startswith("Synthetic note ") and "melanocytic nevus" in d for d in found["P3"]["NV"])
        p3_user = [b["messages"][-1]["content"] for b in fake.chat_bodies if "brief clinical note" in
                   b["messages"][-1]["content"]]
        assert get_strategy("P3").sections["user"].format(diagnosis="melanoma") in p3_user
        assert any("dermoscopic structures (pigment network" in b["messages"][-1]["content"] for b in fake.chat_bodies)
        assert generate_descriptions(cfg, ["MEL", "NV"]) == {"asked": 0, "ok": 8, "failed": 0}  # all in the cache
        assert class_descriptions(cfg, ["MEL", "NV"]) == found and len(fake.chat_bodies) == 8
        assert generate_descriptions(cfg, ["MEL", "NV", "BCC"]) == {"asked": 4, "ok": 12, "failed": 0}
        more = class_descriptions(cfg, ["MEL", "NV", "BCC"])
        assert len(fake.chat_bodies) == 8 + 2 * 2 and more["P3"]["MEL"] == found["P3"]["MEL"]
        generate_descriptions(llm_cfg(tmp_path, fake.base_url, **{"notes.model": "other-llm"}), ["MEL"])
        assert len(fake.chat_bodies) == 12 + 2 * 2  # another model never reuses a description
    with sqlite3.connect(tmp_path / "work" / "descriptions.sqlite") as db:
        kinds = dict(db.execute("SELECT strategy, COUNT(*) FROM notes GROUP BY strategy").fetchall())
    assert kinds == {"class-description:M+P1": 8, "class-description:P3": 8}


def test_descriptions_without_a_reachable_llm_are_failures_and_reading_them_names_the_fix(tmp_path: Path) -> None:
    from dermlib.notes.local_llm import free_port

    cfg = llm_cfg(tmp_path, f"http://127.0.0.1:{free_port()}/v1")
    assert generate_descriptions(cfg, ["MEL"]) == {"asked": 4, "ok": 0, "failed": 4}
    assert generate_descriptions(cfg, ["MEL"])["asked"] == 4  # a connection error is transient: asked again
    with pytest.raises(RuntimeError, match=r"no usable class description for M\+P1 MEL \(2 transient: connection "
                                           r"error.*python -m dermlib\.notes\.descriptions_cli --profile demo"):
        class_descriptions(cfg, ["MEL"])
    assert class_descriptions({**cfg, "eval": {**cfg["eval"], "class_descriptions": 0}}, ["MEL"]) == {}


def test_class_descriptions_read_the_cache_only(tmp_path: Path) -> None:
    """Nothing cached: an error, or (missing="skip") every style left out with a warning; one style cached: that
    style only. The LLM server is never asked, and no cache is created by reading."""
    with FakeOpenAI() as fake:
        cfg = llm_cfg(tmp_path, fake.base_url)
        codes, styles = ["MEL", "NV"], description_styles(cfg)
        assert len(styles) >= 2
        with pytest.raises(RuntimeError, match="no usable class description for M\\+P1 MEL.*not generated"):
            class_descriptions(cfg, codes)
        with pytest.warns(UserWarning, match="left out"):
            assert class_descriptions(cfg, codes, missing="skip") == {}
        assert not descriptions_cache_path(cfg).exists()
        jobs = description_jobs(cfg, codes, styles)
        with NoteCache(descriptions_cache_path(cfg)) as cache:
            for (style, code, k), job in jobs.items():
                if style == styles[0]:  # only the first style is cached
                    cache.put({"key": job.key, "backend": "x", "model": "x", "strategy": style,
                               "template_version": "v", "seed": job.seed, "status": "ok", "note": f"{style} {code} {k}",
                               "n_attempts": 1, "prompt_tokens": 0, "completion_tokens": 0})
        with pytest.warns(UserWarning, match="left out"):
            found = class_descriptions(cfg, codes, missing="skip")
        per_class = int(cfg["eval"]["class_descriptions"])
        assert found == {styles[0]: {c: [f"{styles[0]} {c} {k}" for k in range(per_class)] for c in codes}}
        assert class_descriptions(cfg, codes, styles[:1]) == found  # the cached style alone: no error
        with pytest.raises(ValueError, match="missing must be 'raise' or 'skip'"):
            class_descriptions(cfg, codes, missing="ignore")
        assert fake.counts["chat"] == 0


def test_a_permanently_failed_description_names_itself_and_retry_failed_fills_it(tmp_path: Path, capsys) -> None:
    """A refused description is stored as a permanent failure: notebook 02's `generate_descriptions` never asks
    again, so evaluation stopped on every re-run. The error names that (style, class) and its stored reason and the
    way out; `python -m dermlib.notes.descriptions_cli --retry-failed` against a server that answers fills it and
    asks for nothing else (no note is touched)."""
    from dermlib.notes.descriptions_cli import main

    def refuse_p3_melanoma(call: int, body: dict) -> str | None:
        text = body["messages"][-1]["content"]
        return "refusal" if "melanoma" in text and "brief clinical note" in text else None

    with FakeOpenAI(rule=refuse_p3_melanoma) as fake:
        cfg = llm_cfg(tmp_path, fake.base_url)
        assert generate_descriptions(cfg, ["MEL", "NV"]) == {"asked": 8, "ok": 6, "failed": 2}
        assert generate_descriptions(cfg, ["MEL", "NV"])["asked"] == 0  # what notebook 02 does on a re-run
    with pytest.raises(RuntimeError) as stuck:
        class_descriptions(cfg, ["MEL", "NV"])
    message = str(stuck.value)
    assert message.startswith("no usable class description for P3 MEL (2 failed: refused: ")
    assert "M+P1" not in message.split(" in ")[0] and "NV" not in message.split(" in ")[0]  # only the stuck one
    assert "python -m dermlib.notes.descriptions_cli --profile demo --retry-failed" in message
    assert "notebook 02 never asks again for a failed one" in message and "eval.class_descriptions=0" in message
    argv = ["--set", f"work_dir={tmp_path / 'work'}", "--set", "notes.backend=vllm", "--set", "notes.model=fake-llm",
            "--set", "notes.max_retries=0", "--set", 'eval.strategies=["Img","M","M+P1","P3"]',
            "--set", "eval.class_descriptions=2",
            "--set", "eval.class_descriptions_cache={work_dir}/descriptions.sqlite"]
    with FakeOpenAI(rule=refuse_p3_melanoma) as fake:  # still refusing (the other classes are written): exit 1
        assert main([*argv, "--set", f"notes.base_url={fake.base_url}", "--retry-failed"]) == 1
        assert "P3 MEL (2 failed: refused" in capsys.readouterr().err
    with FakeOpenAI() as fake:  # the server answers now
        assert main([*argv, "--set", f"notes.base_url={fake.base_url}"]) == 1  # without the flag: not asked
        assert fake.counts["chat"] == 0
        capsys.readouterr()
        assert main([*argv, "--set", f"notes.base_url={fake.base_url}", "--retry-failed"]) == 0
        asked = [b["messages"][-1]["content"] for b in fake.chat_bodies]
    assert "2 asked now" in capsys.readouterr().out
    assert len(class_descriptions(cfg, ["MEL"])["P3"]["MEL"]) == 2
    assert len(asked) == 2 and all("melanoma" in text for text in asked)  # the failed two, nothing else
    assert not (tmp_path / "work" / "notes").exists()  # descriptions alone: no notes table written
