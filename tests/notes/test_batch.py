"""The Batch route (dermlib.notes.batch): files, a batch and its polls on the fake server fill the same cache as
the normal route."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dermlib.notes import synthesize
from dermlib.notes.batch import synthesize_batch
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.notes import SECRET, make_manifest, note_settings


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
