"""A trained dermlib model as a Hugging Face Hub model folder: `DermModel.save_pretrained` / `from_pretrained`.

The folder (format `FORMAT_VERSION`) holds everything inference needs and nothing of the pipeline that made it:

    config.json               the architecture (encoders' names, projection, embed dim), the classes, the run's name
    model.safetensors         every weight, frozen encoders included (tensors shared by a "shared" projection once)
    text_encoder/             the text encoder's config and tokenizer (text runs)
    preprocessor_config.json  image size, normalisation, crop rule per modality, EXIF, the default modality
    prompts.json              the class prompts of zero-shot classification and the concept phrases
    README.md                 the model card (YAML metadata + data, metrics with 95 % CIs, intended use, limitations)

`from_pretrained(folder)` builds the model empty (no pretrained download, no checkpoint) and fills it from
model.safetensors; a Hub id downloads the folder first (`push_to_hub` is the mixin's, for users with a network).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import ModelCard, ModelCardData, PyTorchModelHubMixin
from safetensors.torch import load_model, save_model

from dermlib import __version__, metrics
from dermlib.train.batches import images_to_float, pad_batch, tokenize
from dermlib.train.model import (IMAGENET_MEAN, IMAGENET_STD, PUBMEDBERT, ImageEncoder, MultimodalModel, TextEncoder,
                                 autocast)

FORMAT = "dermlib-model"
FORMAT_VERSION = 1
WEIGHTS, CONFIG, PREPROCESSING, PROMPTS, CARD, TEXT_DIR = (
    "model.safetensors", "config.json", "preprocessor_config.json", "prompts.json", "README.md", "text_encoder")
CROP_RULES = {"dermoscopic": "otsu", "clinical": "none"}  # what dermlib.data.preprocess.preprocess_image does
# the Hub ids of the encoders' starting weights, where they are on the Hub (EfficientNet-Lite0's come from a package)
BASE_MODELS = {"minilm-l6": "sentence-transformers/all-MiniLM-L6-v2", PUBMEDBERT: PUBMEDBERT,
               "densenet121": "timm/densenet121.tv_in1k"}
GALLERY_KEY = b"dermlib"  # an embeddings parquet's schema metadata: {format_version, run, split, embed_dim}
REEXPORT = "export the run again with `dermlib export RUN_DIR {folder}` (into a new or emptied folder)"


class ModelFormatError(ValueError):
    """A model folder this dermlib cannot load; the message names the file and the fix."""


@dataclass(frozen=True)
class ModelConfig:
    """config.json: what the model is (architecture, classes), never where it was made (no path, no pipeline)."""

    run: str  # the run's name (strategy, seed, config hash): galleries of embeddings name it too
    strategy: str  # "Img" (no text branch) or the note strategy the text branch trained on
    synthetic: bool  # trained on SynthDerm
    datasets: list[str]  # the sources' names
    classes: list[str]  # the classifier's output order (codes)
    class_names: dict[str, str]
    image_encoder: str
    trunk_adapter_rank: int
    memory_efficient: bool
    text_encoder: str | None  # the text encoder's name (None: image-only)
    pooling: str
    max_text_len: int
    embed_dim: int
    projection: str
    dropout: float
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    dermlib_version: str = __version__

    @property
    def text(self) -> bool:
        """Whether the model has a text branch (zero-shot, concepts and nearest notes need one)."""
        return self.text_encoder is not None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: Path) -> ModelConfig:
        """Validate a config.json's content (`where` names it in errors): format, version, keys."""
        check_version(data, where, "config")
        fields = dataclasses.fields(cls)
        required = {f.name for f in fields if f.default is dataclasses.MISSING}
        missing, unknown = sorted(required - set(data)), sorted(set(data) - {f.name for f in fields})
        if missing or unknown:
            raise ModelFormatError(f"{where}: missing keys {missing}, unknown keys {unknown}: the file was edited or "
                                   f"is damaged; {REEXPORT.format(folder=where.parent)}")
        return cls(**data)


@dataclass(frozen=True)
class Preprocessing:
    """preprocessor_config.json: how a raw image becomes the model's input, as the training cache made it
    (`dermlib.data.preprocess.preprocess_image`): EXIF orientation applied, cropped by the rule of its modality,
    resized to `image_size` square, scaled to [0, 1]; the model applies the normalisation itself."""

    image_size: int
    default_modality: str  # the modality most training images had: `dermlib predict --modality` overrides it
    crop: dict[str, str] = field(default_factory=lambda: dict(CROP_RULES))
    exif_transpose: bool = True
    resize: str = "box reduce to about 4x size, then anti-aliased bilinear (skimage.transform.resize, order=1)"
    input: str = "uint8 RGB [S, S, 3] -> float [0, 1] (3, S, S); normalisation inside the model"
    normalisation: dict[str, list[float]] = field(
        default_factory=lambda: {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)})
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready preprocessing config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: Path) -> Preprocessing:
        """Validate a preprocessor_config.json's content: its version and crop rules must be this dermlib's."""
        check_version(data, where, "preprocessing config")
        try:
            made = cls(**data)
        except TypeError as err:
            raise ModelFormatError(f"{where}: {err}; {REEXPORT.format(folder=where.parent)}") from None
        if made.crop != CROP_RULES or made.default_modality not in CROP_RULES or not made.exif_transpose:
            raise ModelFormatError(f"{where}: crop rules {made.crop} (default {made.default_modality!r}) are not "
                                   f"the ones this dermlib applies ({CROP_RULES}); "
                                   f"{REEXPORT.format(folder=where.parent)}")
        return made


def check_version(data: dict[str, Any], where: Path, what: str) -> None:
    """Raise ModelFormatError naming `where` and the fix unless `data` is of this dermlib's format version."""
    version = data.get("format_version")
    if version is None and {"train", "resolved"} <= set(data):
        raise ModelFormatError(f"{where}: an export of an older dermlib (a whole pipeline config, format 0; this "
                               f"dermlib reads format {FORMAT_VERSION}): {REEXPORT.format(folder=where.parent)}")
    if not isinstance(version, int) or data.get("format", FORMAT) != FORMAT:
        raise ModelFormatError(f"{where}: not a dermlib {what} (no format_version): export a run with "
                               f"`dermlib export RUN_DIR {where.parent}`")
    if version > FORMAT_VERSION:
        raise ModelFormatError(f"{where}: written by a newer dermlib (format {version}; this one reads "
                               f"{FORMAT_VERSION}): upgrade dermlib (pip install -U dermlib)")
    if version < FORMAT_VERSION:
        raise ModelFormatError(f"{where}: format {version}, this dermlib reads {FORMAT_VERSION}: "
                               f"{REEXPORT.format(folder=where.parent)}")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a model folder's file; ModelFormatError naming it when absent or not JSON."""
    if not path.is_file():
        raise ModelFormatError(f"{path}: missing: {path.parent} is not a complete dermlib model folder; "
                               f"{REEXPORT.format(folder=path.parent)}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFormatError(f"{path}: not valid JSON ({err}); {REEXPORT.format(folder=path.parent)}") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: not a JSON object; {REEXPORT.format(folder=path.parent)}")
    return data


def check_folder(folder: str | Path) -> ModelConfig:
    """The config of a model folder, after checking that it is one this dermlib reads (ModelFormatError if not)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFormatError(f"{folder}: no such model folder: export a run into it with "
                               f"`dermlib export RUN_DIR {folder}`")
    return ModelConfig.from_dict(read_json(folder / CONFIG), folder / CONFIG)


def card_data(config: ModelConfig, base: ModelCardData | None = None) -> ModelCardData:
    """The model card's YAML metadata: licence, datasets, base models, tags, library and pipeline tag."""
    data = ModelCardData(**(base.to_dict() if base is not None else {}))
    data.license = "mit" if config.synthetic else "other"
    if not config.synthetic:  # real images: each dataset's own terms apply to what was learnt from it
        data.license_name = "dataset-terms"
    data.datasets = ["synthderm"] if config.synthetic else list(config.datasets)
    data.base_model = [BASE_MODELS[n] for n in (config.image_encoder, config.text_encoder) if n in BASE_MODELS]
    extra = ["dermatology", "skin-lesion", "dermlib"] + (["synthetic-data", "synthderm"] if config.synthetic else [])
    if config.text:  # the strategy as a tag: `M+P1&P3` -> `notes-M+P1-and-P3`
        strategy = config.strategy.replace("&", "-and-").replace("|", "-or-").replace(",", "-")
        extra += ["zero-shot-image-classification", "image-text", f"notes-{strategy}"]
    data.tags = sorted(set((data.tags or []) + extra))
    data.model_name = config.run
    return data


class DermModel(MultimodalModel, PyTorchModelHubMixin, library_name="dermlib", pipeline_tag="image-classification",
                paper_url="https://arxiv.org/abs/2511.21827", tags=["dermatology", "image-classification"]):
    """A trained image + text model with what inference needs: its config, preprocessing, prompts and card.

    Built empty from `config` (+ the text encoder's `text_config` and `tokenizer`), then filled with weights by
    `from_pretrained` or `from_trained`. Classifies from the image alone; the text branch embeds prompts (zero-shot,
    concepts) and notes (retrieval). A MultimodalModel, so `dermlib.train.inference.encode` works on it too.
    """

    def __init__(self, config: dict[str, Any], *, preprocessing: dict[str, Any], prompts: dict[str, Any] | None = None,
                 text_config: Any = None, tokenizer: Any = None, card: ModelCard | None = None) -> None:
        here = Path(CONFIG)
        model_config = ModelConfig.from_dict(dict(config), here)
        image = ImageEncoder(model_config.image_encoder, False, model_config.trunk_adapter_rank,
                             memory_efficient=model_config.memory_efficient)
        text = None
        if model_config.text:
            if text_config is None or tokenizer is None:
                raise ValueError("a text model needs its text encoder's config and tokenizer (text_encoder/)")
            text = TextEncoder(model_config.text_encoder, model_config.pooling, config=text_config,
                               tokenizer=tokenizer)
        super().__init__(image, text, n_classes=len(model_config.classes), embed_dim=model_config.embed_dim,
                         dropout=model_config.dropout, projection=model_config.projection)
        self.model_config = model_config
        self.preprocessing = Preprocessing.from_dict(dict(preprocessing), Path(PREPROCESSING))
        self.prompts = prompts or {"class_prompts": {}, "concept_phrases": {}}
        self.card = card
        self._hub_mixin_config = model_config.to_dict()  # what the mixin would save: the model config alone
        self._directions: dict[str, tuple[list[str], np.ndarray]] = {}
        self.eval()

    @classmethod
    def from_trained(cls, model: MultimodalModel, config: ModelConfig, preprocessing: Preprocessing,
                     prompts: dict[str, Any], card_body: str) -> DermModel:
        """A DermModel holding a trained MultimodalModel's weights (e.g. `load_run`'s), ready to save."""
        text = model.text_encoder
        made = cls(config.to_dict(), preprocessing=preprocessing.to_dict(), prompts=prompts,
                   text_config=None if text is None else copy.deepcopy(text.encoder.config),
                   tokenizer=None if text is None else text.tokenizer)
        made.load_state_dict(model.state_dict(), strict=True)
        made.card = ModelCard(f"---\n{card_data(config, made._hub_mixin_info.model_card_data).to_yaml()}\n---\n\n"
                              f"{card_body}")
        return made.eval()

    @classmethod
    def from_pretrained(  # type: ignore[override]
            cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> DermModel:
        """Load a model folder (offline, CPU, eval mode) or, with a network, a Hub repository id."""
        name = str(pretrained_model_name_or_path)
        local = os.path.isdir(name) or os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1
        if local:
            check_folder(name)  # a clear error before the mixin reads config.json
        return super().from_pretrained(name, **kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | Path | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         map_location: str = "cpu", **model_kwargs: Any) -> DermModel:
        """The mixin's hook: find the folder (a local one, or a Hub snapshot), then `load_folder` it."""
        folder = Path(model_id)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(repo_id=model_id, revision=revision, cache_dir=cache_dir, token=token,
                                            force_download=force_download, local_files_only=local_files_only))
        return load_folder(folder, map_location)

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write every file of the folder (the mixin's save_pretrained calls this, then keeps what it finds)."""
        about = {"format": "pt", "dermlib_format_version": str(FORMAT_VERSION), "run": self.model_config.run}
        save_model(self, str(save_directory / WEIGHTS), metadata=about, force_contiguous=True)  # shared tensors once
        write_json(save_directory / CONFIG, self.model_config.to_dict())
        write_json(save_directory / PREPROCESSING, self.preprocessing.to_dict())
        write_json(save_directory / PROMPTS, {"format_version": FORMAT_VERSION, **self.prompts})
        if self.text_encoder is not None:
            text_config = copy.deepcopy(self.text_encoder.encoder.config)
            text_config._name_or_path = self.model_config.text_encoder  # not the folder it was loaded from
            text_config.save_pretrained(save_directory / TEXT_DIR)
            self.text_encoder.tokenizer.save_pretrained(save_directory / TEXT_DIR)
        elif (save_directory / TEXT_DIR).is_dir():  # an image-only model saved over a text model's folder
            shutil.rmtree(save_directory / TEXT_DIR)
        self.generate_model_card().save(save_directory / CARD)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The card exported with the model (its metadata from the config), or a short one for a model built by hand."""
        if self.card is not None:
            return self.card
        data = card_data(self.model_config, self._hub_mixin_info.model_card_data)
        return ModelCard(f"---\n{data.to_yaml()}\n---\n\n# dermlib model `{self.model_config.run}`\n")

    # inference: raw projections (not L2-normalised), probabilities, prompt directions

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.parameters()).device

    @torch.no_grad()
    def embed_images(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Raw image projections (N, E) of preprocessed uint8 images [N, S, S, 3]."""
        self.eval()
        out = [np.zeros((0, self.model_config.embed_dim), np.float32)]
        for start in range(0, len(pixels), batch_size):
            x = images_to_float(torch.from_numpy(np.array(pixels[start: start + batch_size])).to(self.device))
            with autocast(self.device):
                out.append(self.encode_image(x).float().cpu().numpy())
        return np.concatenate(out)

    @torch.no_grad()
    def probabilities(self, image_emb: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) in `model_config.classes` order: softmax of the shared classifier."""
        logits = self.classifier(torch.from_numpy(image_emb).to(self.device).float())
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    @torch.no_grad()
    def embed_texts(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Raw text projections (n, E) of free texts (prompts, phrases, notes) through the text branch."""
        if self.text_encoder is None:
            raise ValueError(f"model {self.model_config.run} is image-only (Img): it has no text branch")
        self.eval()
        tok = self.text_encoder.tokenizer
        ids = tokenize(tok, list(texts), self.model_config.max_text_len)
        out = [np.zeros((0, self.model_config.embed_dim), np.float32)]
        for start in range(0, len(ids), batch_size):
            input_ids, mask = pad_batch(ids[start: start + batch_size], int(tok.pad_token_id))
            with autocast(self.device):
                out.append(self.encode_text(input_ids.to(self.device), mask.to(self.device)).float().cpu().numpy())
        return np.concatenate(out)

    def directions(self, kind: str) -> tuple[list[str], np.ndarray]:
        """(names, unit directions (n, E)) of the saved `class_prompts` or `concept_phrases`: per name, the normalised
        mean of its normalised prompt embeddings (as dermlib.evaluate.probes); computed once per model."""
        if kind not in ("class_prompts", "concept_phrases"):
            raise ValueError(f"kind must be 'class_prompts' or 'concept_phrases', not {kind!r}")
        if kind not in self._directions:
            texts: dict[str, list[str]] = self.prompts.get(kind, {})
            names = list(texts)
            if not names or self.text_encoder is None:
                self._directions[kind] = ([], np.zeros((0, self.model_config.embed_dim), np.float32))
            else:
                embedded = metrics.l2_normalise(self.embed_texts([p for name in names for p in texts[name]]))
                bounds = np.cumsum([0, *(len(texts[name]) for name in names)])
                means = np.stack([embedded[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])
                self._directions[kind] = (names, metrics.l2_normalise(means))
        return self._directions[kind]


def write_json(path: Path, data: dict[str, Any]) -> None:
    """A model folder's JSON file, indented, its keys in their order (classes and prompts in the taxonomy's)."""
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def load_folder(folder: str | Path, map_location: str = "cpu") -> DermModel:
    """A DermModel from a model folder, offline: built empty from its files, filled from model.safetensors."""
    folder = Path(folder)
    config = check_folder(folder)
    preprocessing = read_json(folder / PREPROCESSING)
    prompts = read_json(folder / PROMPTS)
    check_version(prompts, folder / PROMPTS, "prompts file")
    prompts.pop("format_version")
    text_config = tokenizer = None
    if config.text:
        from transformers import AutoConfig, AutoTokenizer

        text_dir = folder / TEXT_DIR
        try:
            text_config, tokenizer = AutoConfig.from_pretrained(text_dir), AutoTokenizer.from_pretrained(text_dir)
        except (OSError, ValueError) as err:
            raise ModelFormatError(f"{text_dir}: the text encoder's config or tokenizer cannot be read "
                                   f"({type(err).__name__}); {REEXPORT.format(folder=folder)}") from None
    card = ModelCard.load(folder / CARD) if (folder / CARD).is_file() else None
    model = DermModel(config.to_dict(), preprocessing=preprocessing, prompts=prompts, text_config=text_config,
                      tokenizer=tokenizer, card=card)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ModelFormatError(f"{weights}: missing; {REEXPORT.format(folder=folder)}")
    try:
        load_model(model, weights, strict=True, device=map_location)
    except Exception as err:  # safetensors' header errors, missing/unexpected keys, shape mismatches
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFormatError(f"{weights}: cannot be loaded into a {config.image_encoder}"
                               f"{' + ' + str(config.text_encoder) if config.text else ''} model ({first}); "
                               f"the file is damaged or not this folder's: {REEXPORT.format(folder=folder)}") from None
    return model.eval()
