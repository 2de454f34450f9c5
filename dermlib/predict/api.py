"""Predict raw image files with an exported model: preprocessing as in training, then per image the class
probabilities, zero-shot scores from the saved class prompts, the top concepts and the nearest notes of a gallery.

    model = dermlib.predict.DermModel.from_pretrained("export/")
    preds = dermlib.predict.predict(model, ["a.jpg", "b.png"], gallery="export/embeddings_test.parquet")
    preds[0].probabilities, preds[0].zero_shot, preds[0].concepts, preds[0].neighbours, preds[0].synthetic

Each image goes through `dermlib.data.preprocess.preprocess_image`, the function that built the training cache:
EXIF orientation applied, the Otsu field-of-view crop for a dermoscopic image, the whole image for a clinical photo
(training used an annotated lesion box where a dataset gave one; a raw file has none), resized to the model's
square size. Scores are cosines between L2-normalised embeddings; probabilities are the classifier's softmax.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from dermlib import metrics
from dermlib.data.preprocess import ImageError, preprocess_image
from dermlib.predict.hub import CROP_RULES, FORMAT_VERSION, GALLERY_KEY, DermModel, Preprocessing

MODALITIES = tuple(CROP_RULES)  # dermoscopic, clinical
ON_ERROR = ("raise", "keep")


class GalleryError(ValueError):
    """A gallery file that cannot serve this model; the message names the file and the fix."""


@dataclass
class Prediction:
    """What the model says about one image (plain data: `to_dict()` is JSON-ready). A failed image has `error` set
    and empty scores."""

    image: str  # the file as given
    model: str  # the run the model was exported from
    synthetic: bool  # the model was trained on SynthDerm (synthetic images): not for real patients
    modality: str  # the crop rule applied: "dermoscopic" (Otsu) or "clinical" (whole image)
    label: str | None = None  # the most probable class (code)
    label_name: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)  # class code -> softmax probability
    zero_shot: dict[str, float] = field(default_factory=dict)  # class code -> cosine to its prompts (text models)
    concepts: list[dict[str, Any]] = field(default_factory=list)  # [{"concept", "score"}], best first
    neighbours: list[dict[str, Any]] = field(default_factory=list)  # [{"rank", "score", "sample_id", ...}]
    preprocessing: dict[str, Any] = field(default_factory=dict)  # crop method and box, original size, conversions
    error: str | None = None  # "<file>: <reason>" when the image could not be used

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Gallery:
    """Embeddings of a split (`dermlib export RUN OUT --embeddings SPLIT`) to find an image's nearest notes (text
    models; `kind` "note") or nearest images (image-only models, or a gallery without notes; `kind` "image")."""

    path: Path
    rows: pd.DataFrame  # sample_id, source, partition, label (and note) of each gallery item
    vectors: np.ndarray  # (n, E) L2-normalised
    kind: str


def load_gallery(path: str | Path, model: DermModel) -> Gallery:
    """A gallery parquet written by `export --embeddings` for this very model (GalleryError naming the file if not)."""
    path = Path(path)
    fix = f"write it with `dermlib export RUN_DIR <model folder> --embeddings SPLIT` for model {model.model_config.run}"
    if not path.is_file():
        raise GalleryError(f"{path}: no such gallery file; {fix}")
    try:
        schema = pq.read_schema(path)
    except Exception as err:  # not a parquet file
        raise GalleryError(f"{path}: not a parquet file ({type(err).__name__}); {fix}") from None
    about = json.loads((schema.metadata or {}).get(GALLERY_KEY, b"{}"))
    if about.get("format_version") != FORMAT_VERSION:
        raise GalleryError(f"{path}: not a gallery of this dermlib's format {FORMAT_VERSION} (found "
                           f"{about.get('format_version')}); {fix}")
    if about.get("run") != model.model_config.run:
        raise GalleryError(f"{path}: embeddings of model {about.get('run')}, not of {model.model_config.run}; {fix}")
    frame = pd.read_parquet(path)
    use_notes = model.model_config.text and "text_emb" in frame.columns
    column = "text_emb" if use_notes else "image_emb"
    vectors = np.stack(frame[column].to_numpy()).astype(np.float32) if len(frame) else np.zeros((0, 1), np.float32)
    kept = ~np.isnan(vectors).any(axis=1)  # a sample without a note has no text embedding
    rows = frame.loc[kept, [c for c in ("sample_id", "source", "partition", "label", "note") if c in frame.columns]]
    return Gallery(path, rows.reset_index(drop=True), metrics.l2_normalise(vectors[kept]),
                   "note" if use_notes else "image")


def load_image(path: str | Path, preprocessing: Preprocessing, modality: str | None = None
               ) -> tuple[np.ndarray, dict[str, Any]]:
    """One raw image file -> (uint8 [S, S, 3] as the training cache would hold it, what was done to it).
    Raises ImageError "<file>: <reason>" for a missing, unreadable or unusable file."""
    modality = modality or preprocessing.default_modality
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, not {modality!r}")
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path}: a folder, not an image file")
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():  # as the cache builder: PIL's warnings are not the user's business here
            warnings.simplefilter("ignore")
            pixels, info = preprocess_image(path, modality, None, preprocessing.image_size)
    except ImageError as err:
        raise ImageError(f"{path}: {err}") from None
    except Exception as err:  # a decoder bug on one file: named, like any unusable image
        raise ImageError(f"{path}: failed to preprocess: {type(err).__name__}: {err}") from None
    return pixels, {"modality": modality, **info}


def _top(names: list[str], scores: np.ndarray, n: int) -> list[tuple[str, float]]:
    """The `n` best (name, score) pairs, best first (ties in name order)."""
    order = np.argsort(-scores, kind="stable")[:max(n, 0)]
    return [(names[i], float(scores[i])) for i in order]


def predict(model: DermModel, images: Sequence[str | Path], *, modality: str | None = None,
            gallery: str | Path | Gallery | None = None, k: int = 5, concepts: int = 5, batch_size: int = 32,
            on_error: str = "raise") -> list[Prediction]:
    """A Prediction per image file, in order. `modality` (dermoscopic | clinical; default the model's
    `preprocessing.default_modality`) chooses the crop rule; `gallery` (a path or `load_gallery`'s result) adds the
    `k` nearest notes; `concepts` is how many concept scores to keep. An unusable image raises ImageError
    (`on_error="raise"`) or comes back with its `error` set (`"keep"`)."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    cfg, prep = model.model_config, model.preprocessing
    chosen = modality or prep.default_modality
    if chosen not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, not {chosen!r}")
    if gallery is not None and not isinstance(gallery, Gallery):
        gallery = load_gallery(gallery, model)
    out, pixels = [], []
    for image in images:
        made = Prediction(image=str(image), model=cfg.run, synthetic=cfg.synthetic, modality=chosen)
        try:
            pix, made.preprocessing = load_image(image, prep, chosen)
            pixels.append(pix)
        except ImageError as err:
            if on_error == "raise":
                raise
            made.error = str(err)
        out.append(made)
    good = [p for p in out if p.error is None]
    if not good:
        return out
    emb = model.embed_images(np.stack(pixels), batch_size=batch_size)
    unit = metrics.l2_normalise(emb)
    probs = model.probabilities(emb)
    class_names, class_dirs = model.directions("class_prompts")
    concept_names, concept_dirs = model.directions("concept_phrases")
    for i, made in enumerate(good):
        made.probabilities = {c: float(p) for c, p in zip(cfg.classes, probs[i])}
        made.label = cfg.classes[int(probs[i].argmax())]
        made.label_name = cfg.class_names.get(made.label, made.label)
        made.zero_shot = {c: float(s) for c, s in zip(class_names, class_dirs @ unit[i])}
        made.concepts = [{"concept": c, "score": s} for c, s in _top(concept_names, concept_dirs @ unit[i], concepts)]
        if gallery is not None and len(gallery.rows):
            sims = gallery.vectors @ unit[i]
            for rank, j in enumerate(np.argsort(-sims, kind="stable")[:max(k, 0)], start=1):
                row = {key: (None if pd.isna(v) else str(v)) for key, v in gallery.rows.iloc[j].items()}
                made.neighbours.append({"rank": rank, "score": float(sims[j]), "kind": gallery.kind, **row})
    return out
