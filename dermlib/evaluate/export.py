"""Export a trained run: weights (safetensors), config, tokenizer and a model card; load it back with one call.

    python -m dermlib.evaluate.export RUN_DIR OUT_DIR [--embeddings train val test external]
    model, info = dermlib.evaluate.export.load_exported(OUT_DIR)      # no training code, no pretrained download

The export is self-contained: it holds every weight, frozen encoders included, so loading needs neither the
training run nor the encoders' original source. `--embeddings` also writes the image (and note) embeddings of
those splits of the run's work dir to `embeddings_<split>.parquet` (progress bars on a terminal). A RUN_DIR that
is missing or unfinished ends in one error line, exit status 2, as every dermlib command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from safetensors.torch import load_file, save_file

from dermlib.data.preprocess import cached_pixels
from dermlib.data.schema import read_manifest
from dermlib.notes.store import first_notes
from dermlib.train.inference import encode, load_run
from dermlib.train.model import MultimodalModel, build_model
from dermlib.progress import progress
from dermlib.train.settings import TrainSettings
from dermlib.workdir import WorkDir

SPLITS = ("train", "val", "test", "external")


def _metrics_table(run_dir: Path, cfg: dict[str, Any]) -> pd.DataFrame | None:
    """The run's pooled evaluation rows with their intervals, when the grid evaluated it."""
    path = WorkDir.of(cfg).run_results(run_dir.name)
    if not path.exists():
        return None
    rows = pd.read_parquet(path)
    keep = rows["metric"].isin(["kappa", "balanced_accuracy", "map_i2t", "map_t2i", "paired_cosine"])
    return rows[keep & (rows["source"] == "pooled")][["partition", "metric", "value", "ci_low", "ci_high", "n"]]


def _interval(low: float, high: float) -> str:
    """A card's 95 % CI cell: `low–high`, or `–` for a metric reported without one (balanced accuracy)."""
    return "–" if pd.isna(low) or pd.isna(high) else f"{low:.3f}–{high:.3f}"


def model_card(run_dir: Path, cfg: dict[str, Any]) -> str:
    """A model card in Markdown: what the model is, what it was trained on, how it scored, and what not to do."""
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
        f"- Text encoder `{t.text_encoder}` (pooling `{t.pooling}`, last {t.train_last_n_text_layers} "
        f"layers trained)" if t.text else "- No text branch (image-only baseline)",
        f"- {t.embed_dim}-d shared space, one classifier shared by both branches; classes "
        f"{', '.join(resolved['classes'])}",
        f"- Notes: strategy `{t.strategy}`; seed {t.seed}; config hash `{resolved['config_hash']}`",
        "", "## Data",
        f"- Profile `{cfg['profile']}`: {resolved['n_train']} training and {resolved['n_val']} validation images "
        f"({resolved.get('n_train_with_note', 0)} training images with a note)",
        f"- Sources: {cfg['data']['sources'] if isinstance(cfg['data']['sources'], str) else ', '.join(cfg['data']['sources'])}",
        "", "## Evaluation (pooled, 95 % cluster-bootstrap intervals)"]
    table = _metrics_table(run_dir, cfg)
    if table is None or table.empty:
        lines.append("Not evaluated yet: run `dermlib.evaluate.grid.run_grid` (notebook 04).")
    else:
        lines += ["| partition | metric | value | 95 % CI | n |", "|---|---|---|---|---|"]
        lines += [f"| {r.partition} | {r.metric} | {r.value:.3f} | {_interval(r.ci_low, r.ci_high)} | {r.n} |"
                  for r in table.itertuples()]
    lines += ["", "## Intended use",
              "Research on synthetic clinical notes for image-text models (Marini et al., arXiv 2511.21827): "
              "classification from the image branch, retrieval and alignment between images and notes.",
              "", "## Limitations",
              "- Classification uses the image alone; the notes were written from the label and must never be an "
              "input at test time.",
              "- Notes from an LLM that never saw the image describe attributes that may be invented "
              "(see the notes audit).",
              "- Not a medical device; not validated on any patient population."]
    return "\n".join(lines) + "\n"


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write `out_dir` with model.safetensors, config.json, text_encoder/ and README.md (the model card)."""
    run_dir, out = Path(run_dir), Path(out_dir)
    model, cfg = load_run(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, out / "model.safetensors", metadata={"format": "pt", "run": run_dir.name})
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str))
    if model.text_encoder is not None:
        model.text_encoder.tokenizer.save_pretrained(out / "text_encoder")
        model.text_encoder.encoder.config.save_pretrained(out / "text_encoder")
    (out / "README.md").write_text(model_card(run_dir, cfg))
    return out


def load_exported(out_dir: str | Path) -> tuple[MultimodalModel, dict[str, Any]]:
    """An exported model (eval mode, CPU) and its config, from the export folder alone."""
    out = Path(out_dir)
    cfg = json.loads((out / "config.json").read_text())
    t = TrainSettings.from_config(cfg).replace(freeze_image_encoder=False)  # every weight is in the file
    text_dir = out / "text_encoder" if t.text else None
    model = build_model(t, len(cfg["resolved"]["classes"]), pretrained=False, text_dir=text_dir)
    model.load_state_dict(load_file(out / "model.safetensors"), strict=True)
    return model.eval(), cfg


def split_rows(cfg: dict[str, Any], split: str) -> pd.DataFrame:
    """Manifest rows of a split of the run's work dir ("external": every external source)."""

    manifest = read_manifest(WorkDir.of(cfg).manifest)
    chosen = manifest["partition"] == "external" if split == "external" else manifest["split"] == split
    return manifest[chosen.fillna(False).astype(bool)].sort_values("sample_id", kind="stable").reset_index(drop=True)


def export_embeddings(out_dir: str | Path, split: str) -> Path:
    """`embeddings_<split>.parquet`: sample_id, source, label, image_emb (and note, text_emb) per image."""

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    model, cfg = load_exported(out_dir)
    rows, pixels = cached_pixels(split_rows(cfg, split), WorkDir.of(cfg).cache, missing="drop", what=f"{split} split")
    notes = None
    if TrainSettings.from_config(cfg).text:
        notes = first_notes(cfg["work_dir"], cfg["train"]["strategy"], rows["sample_id"])
    emb = encode(model, pixels, notes, cfg)
    frame = rows[["sample_id", "source", "partition", "label"]].astype(str)
    frame["image_emb"] = list(emb["image_emb"])
    if notes is not None:
        frame["note"], frame["text_emb"] = notes, list(emb["text_emb"])
    path = Path(out_dir) / f"embeddings_{split}.parquet"
    frame.to_parquet(path, index=False)
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
    except ValueError as err:  # a refused or corrupt checkpoint: its own message names the file and the fix
        parser.exit(1, f"{parser.prog}: {err}\n")
    with progress(len(args.embeddings), "export embeddings", unit="split") as bar:
        for split in args.embeddings:
            bar.set_postfix_str(split)
            bar.write(str(export_embeddings(out, split)), file=sys.stdout)
            bar.update(1)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
