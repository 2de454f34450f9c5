"""The notes command line (`python -m dermlib.notes`): a non-zero exit when every note failed or the server is
down, and bad arguments answered in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.notes import SECRET, make_manifest


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
