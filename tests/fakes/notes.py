"""Rows and settings for the note tests: a small SynthDerm-like manifest, NoteSettings pointed at the fake
OpenAI-protocol server (tests/fakes/fake_openai.py) with a secret key, and the demo config pointed at it for the
class descriptions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermlib.config import get_config
from dermlib.data.schema import to_manifest
from dermlib.notes.plan import NoteSettings
from tests.fakes.fake_openai import FakeOpenAI

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


def llm_cfg(tmp: Path, base_url: str, **extra: object) -> dict:
    """The demo profile pointed at an OpenAI-protocol server, two descriptions per class and style."""
    overrides = {"work_dir": str(tmp / "work"), "notes.backend": "vllm", "notes.base_url": base_url,
                 "notes.model": "fake-llm", "notes.max_retries": 0, "notes.timeout": 5.0,
                 "eval.strategies": ["Img", "M", "M+P1", "P3"], "eval.class_descriptions": 2,
                 "eval.class_descriptions_cache": "{work_dir}/descriptions.sqlite"}
    return get_config("demo", {**overrides, **extra})
