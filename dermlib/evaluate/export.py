"""Export a trained run as a Hugging Face Hub model folder (`dermlib.predict.DermModel`), and embed splits with it.

    python -m dermlib.evaluate.export RUN_DIR OUT_DIR [--embeddings train val test external]
    dermlib export RUN_DIR OUT_DIR                                     # the same
    model = dermlib.predict.DermModel.from_pretrained(OUT_DIR)         # no training code, no pretrained download

OUT_DIR gets model.safetensors (every weight, frozen encoders included), config.json (the architecture and classes
only: no path, no pipeline setting), text_encoder/ (config and tokenizer), preprocessor_config.json (image size,
normalisation, crop rule per modality, EXIF), prompts.json (zero-shot class prompts, concept phrases) and README.md
(the model card: YAML metadata, data, pooled metrics with their 95 % intervals when evaluated, intended use,
limitations). `--embeddings` also writes the image (and note) embeddings of those splits of the run's work dir to
`embeddings_<split>.parquet`, the galleries of `dermlib predict --gallery` (progress bars on a terminal). A RUN_DIR
that is missing or unfinished ends in one error line, exit status 2; a refused checkpoint or an OUT_DIR holding
something else, in one error line naming the file and the fix, exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dermlib.atomic import atomic_path, read_parquet
from dermlib.data.labels import CLASS_NAMES
from dermlib.data.preprocess import cached_pixels
from dermlib.data.schema import read_manifest
from dermlib.evaluate.probes import class_prompts, concept_phrases, trained_classes
from dermlib.notes.store import first_notes
from dermlib.predict.hub import (CONFIG, CROP_RULES, FORMAT_VERSION, GALLERY_KEY, DermModel, ModelConfig,
                                 ModelFormatError, Preprocessing, check_folder)
from dermlib.progress import progress
from dermlib.train.inference import encode, load_run
from dermlib.train.settings import TrainSettings
from dermlib.workdir import WorkDir

SPLITS = ("train", "val", "test", "external")


def _metrics_table(run_dir: Path, cfg: dict[str, Any]) -> pd.DataFrame | None:
    """The run's pooled evaluation rows with their intervals, when the grid evaluated it."""
    path = WorkDir.of(cfg).run_results(run_dir.name)
    if not path.exists():
        return None
    rows = read_parquet(path, fix="re-run notebook 04_evaluate (./run_all.sh --only 04) to evaluate the run again")
    keep = rows["metric"].isin(["kappa", "balanced_accuracy", "map_i2t", "map_t2i", "paired_cosine"])
    return rows[keep & (rows["source"] == "pooled")][["partition", "metric", "value", "ci_low", "ci_high", "n"]]


def _interval(low: float, high: float) -> str:
    """A card's 95 % CI cell: `low–high`, or `–` for a metric reported without one (balanced accuracy)."""
    return "–" if pd.isna(low) or pd.isna(high) else f"{low:.3f}–{high:.3f}"


def model_card(run_dir: Path, cfg: dict[str, Any]) -> str:
    """The model card's Markdown body (its YAML metadata comes from `dermlib.predict.hub.card_data`): what the model
    is, what it was trained on, how it scored, how to use it, and what not to do."""
    t, resolved = TrainSettings.from_config(cfg), cfg["resolved"]
    synthetic = bool(cfg.get("synthetic"))
    lines = [f"# dermlib model `{run_dir.name}`", ""]
    if synthetic:
        lines += ["> **Trained on synthetic data (SynthDerm).** A teaching and testing artefact: it has never seen a "
                  "photograph of skin and must not be used on patients or to judge the paper's methods.", ""]
    lines += [
        "## Model",
        f"- Image encoder `{t.image_encoder}`" + (" (frozen, pretrained)" if t.freeze_image_encoder else "")
        + (f", with a rank-{t.trunk_adapter_rank} adapter on its conv_head and its last batch norm's affine trained "
           f"before the pooling" if t.trunk_adapter_rank else ""),
        f"- Text encoder `{_public_name(t.text_encoder)}` (pooling `{t.pooling}`, last {t.train_last_n_text_layers} "
        f"layers trained)" if t.text else "- No text branch (image-only baseline)",
        f"- {t.embed_dim}-d shared space ({t.projection} projection heads), one classifier shared by both branches; "
        f"classes {', '.join(resolved['classes'])}",
        f"- Notes: strategy `{t.strategy}`; seed {t.seed}; config hash `{resolved['config_hash']}`",
        "", "## Data",
        f"- Profile `{cfg['profile']}`: {resolved['n_train']} training and {resolved['n_val']} validation images "
        f"({resolved.get('n_train_with_note', 0)} training images with a note)",
        f"- Sources: {', '.join(_sources(cfg))}",
        "", "## Evaluation (pooled, 95 % cluster-bootstrap intervals)"]
    table = _metrics_table(run_dir, cfg)
    if table is None or table.empty:
        lines.append("Not evaluated yet: run `dermlib.evaluate.grid.run_grid` (notebook 04).")
    else:
        lines += ["| partition | metric | value | 95 % CI | n |", "|---|---|---|---|---|"]
        lines += [f"| {r.partition} | {r.metric} | {r.value:.3f} | {_interval(r.ci_low, r.ci_high)} | {r.n} |"
                  for r in table.itertuples()]
    lines += ["", "## Use",
              "```python", "import dermlib.predict",
              "model = dermlib.predict.DermModel.from_pretrained(\"path/to/this/folder\")",
              "preds = dermlib.predict.predict(model, [\"lesion.jpg\"])  # probabilities, zero-shot, concepts",
              "```",
              "or `dermlib predict lesion.jpg --model path/to/this/folder [--modality clinical] [--json]`. Raw "
              "images are preprocessed as in training (`preprocessor_config.json`): EXIF orientation applied, the "
              "Otsu field-of-view crop for dermoscopy, the whole image for clinical photos, resized square.",
              "", "## Intended use",
              "Research on synthetic clinical notes for image-text models (Marini et al., arXiv 2511.21827): "
              "classification from the image branch, retrieval and alignment between images and notes.",
              "", "## Limitations",
              "- Classification uses the image alone; the notes were written from the label and must never be an "
              "input at test time.",
              "- Notes from an LLM that never saw the image describe attributes that may be invented "
              "(see the notes audit).",
              "- Not a medical device; not validated on any patient population."]
    return "\n".join(lines) + "\n"


def _sources(cfg: dict[str, Any]) -> list[str]:
    """The data sources' names of a config (`"synthderm"` or the registry names)."""
    sources = cfg["data"]["sources"]
    return [sources] if isinstance(sources, str) else list(sources)


def _public_name(name: str) -> str:
    """An encoder's name fit for a public file: a local folder's last part, never its absolute path."""
    return Path(name).name if os.path.isabs(name) or Path(name).exists() else name


def model_config(run_dir: Path, cfg: dict[str, Any]) -> ModelConfig:
    """config.json of a run's export: the architecture, classes and encoders' names, nothing about the machine."""
    t, classes = TrainSettings.from_config(cfg), list(cfg["resolved"]["classes"])
    return ModelConfig(run=run_dir.name, strategy=t.strategy, synthetic=bool(cfg.get("synthetic")),
                       datasets=_sources(cfg), classes=classes,
                       class_names={c: CLASS_NAMES.get(c, c) for c in classes}, image_encoder=t.image_encoder,
                       trunk_adapter_rank=int(t.trunk_adapter_rank), memory_efficient=bool(t.memory_efficient),
                       text_encoder=_public_name(t.text_encoder) if t.text else None, pooling=t.pooling,
                       max_text_len=int(t.max_text_len), embed_dim=int(t.embed_dim), projection=t.projection,
                       dropout=float(t.dropout))


def preprocessing(cfg: dict[str, Any]) -> Preprocessing:
    """preprocessor_config.json of a run: the size its cache's images had (as trained, whatever `data.image_size`
    now says) and, as default modality, the one most of its training images had."""
    work = WorkDir.of(cfg)
    size = int(cfg["data"]["image_size"])
    if (work.cache / "images.npy").exists():
        size = int(np.load(work.cache / "images.npy", mmap_mode="r").shape[1])
    modality = "dermoscopic"
    if work.manifest.exists():
        manifest = read_manifest(work.manifest)
        seen = manifest.loc[(manifest["split"] == "train").fillna(False).astype(bool), "modality"].dropna()
        seen = seen[seen.isin(list(CROP_RULES))]
        modality = str(seen.value_counts().idxmax()) if len(seen) else modality
    return Preprocessing(image_size=size, default_modality=modality)


def prompts(cfg: dict[str, Any]) -> dict[str, Any]:
    """prompts.json: the M-template class prompts of zero-shot (the classes the train split holds, as evaluated)
    and the concept phrases (`dermlib.evaluate.probes`)."""
    try:
        present = trained_classes(cfg)
    except FileNotFoundError:  # the work dir's manifest is gone: every class of the classifier
        present = list(cfg["resolved"]["classes"])
    return {"class_prompts": class_prompts(present), "concept_phrases": concept_phrases(),
            "ensemble": "mean of L2-normalised prompt embeddings, then L2-normalised; score = cosine to the image"}


def _check_out(out: Path) -> None:
    """Refuse an OUT_DIR that holds anything but a model folder of this format (naming the file and the fix)."""
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / CONFIG).exists():
        raise ValueError(f"OUT_DIR {out} is not empty and not a dermlib model folder: choose a new or empty folder")
    try:
        check_folder(out)
    except ModelFormatError as err:
        raise ValueError(f"{err}; or delete {out} first") from None


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a finished run as a Hub model folder in `out_dir` (see the module doc); re-exporting into a model
    folder of this format overwrites it."""
    run_dir, out = Path(run_dir), Path(out_dir)
    _check_out(out)
    model, cfg = load_run(run_dir)
    hub = DermModel.from_trained(model, model_config(run_dir, cfg), preprocessing(cfg), prompts(cfg),
                                 model_card(run_dir, cfg))
    hub.save_pretrained(out)
    return out


def load_exported(out_dir: str | Path) -> tuple[DermModel, dict[str, Any]]:
    """An exported model (eval mode, CPU) and its model config: `DermModel.from_pretrained` (kept as an alias)."""
    model = DermModel.from_pretrained(out_dir)
    return model, model.model_config.to_dict()


def split_rows(cfg: dict[str, Any], split: str) -> pd.DataFrame:
    """Manifest rows of a split of the run's work dir ("external": every external source)."""

    manifest = read_manifest(WorkDir.of(cfg).manifest)
    chosen = manifest["partition"] == "external" if split == "external" else manifest["split"] == split
    return manifest[chosen.fillna(False).astype(bool)].sort_values("sample_id", kind="stable").reset_index(drop=True)


def export_embeddings(out_dir: str | Path, split: str, run_dir: str | Path) -> Path:
    """`embeddings_<split>.parquet` in the export `out_dir`: sample_id, source, partition, label, image_emb (and
    note, text_emb) per image of the run's work dir, from the exported model; its metadata names the model (a
    gallery for `dermlib predict`)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    model = DermModel.from_pretrained(out_dir)
    cfg = json.loads((Path(run_dir) / "config.json").read_text())
    rows, pixels = cached_pixels(split_rows(cfg, split), WorkDir.of(cfg).cache, missing="drop", what=f"{split} split")
    notes = None
    if model.model_config.text:
        notes = first_notes(cfg["work_dir"], cfg["train"]["strategy"], rows["sample_id"])
    emb = encode(model, pixels, notes, cfg)
    frame = rows[["sample_id", "source", "partition", "label"]].astype(str)
    frame["image_emb"] = list(emb["image_emb"])
    if notes is not None:
        frame["note"], frame["text_emb"] = notes, list(emb["text_emb"])
    path = Path(out_dir) / f"embeddings_{split}.parquet"
    table = pa.Table.from_pandas(frame, preserve_index=False)
    about = {"format_version": FORMAT_VERSION, "run": model.model_config.run, "split": split,
             "embed_dim": model.model_config.embed_dim}
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                      GALLERY_KEY: json.dumps(about).encode()}), tmp)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dermlib.evaluate.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--embeddings", nargs="*", default=[], choices=SPLITS, metavar="SPLIT")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        parser.error(f"RUN_DIR {run_dir} does not exist: pass a folder of <work_dir>/runs/ (dermlib.train prints it)")
    if not (run_dir / "done").exists():
        parser.error(f"RUN_DIR {run_dir} is not a finished run (no `done` marker): finish it with "
                     "`python -m dermlib.train` (or notebook 03_train) first")
    if Path(args.out_dir).resolve() == run_dir.resolve():
        parser.error("OUT_DIR must differ from RUN_DIR")
    try:
        out = export_run(run_dir, args.out_dir)
    except ValueError as err:  # a refused or corrupt checkpoint, an OUT_DIR holding something else: named, with the fix
        parser.exit(1, f"{parser.prog}: {err}\n")
    with progress(len(args.embeddings), "export embeddings", unit="split") as bar:
        for split in args.embeddings:
            bar.set_postfix_str(split)
            bar.write(str(export_embeddings(out, split, run_dir)), file=sys.stdout)
            bar.update(1)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
