"""Predict raw images with an exported model (`dermlib export RUN_DIR MODEL_DIR` writes one).

    dermlib predict IMAGE [IMAGE ...] --model MODEL_DIR [--modality dermoscopic|clinical]
                    [--gallery MODEL_DIR/embeddings_test.parquet] [-k 5] [--concepts 5] [--json]
    python -m dermlib.predict ...   (the same)

Per image: the class probabilities, zero-shot scores (cosine to the class prompts saved with the model), the top
concept scores and, with --gallery (written by `dermlib export ... --embeddings SPLIT`), the k nearest notes (nearest
images for an image-only model). Images are preprocessed as in training: EXIF orientation, the Otsu crop for
dermoscopy, the whole image for clinical photos (--modality; default: the model's preprocessor_config.json).
An unusable image gets one error line naming it and the others are still predicted (exit status 1); a model
folder or gallery that cannot be used stops with one error line naming the file (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dermlib.predict.api import MODALITIES, GalleryError, Prediction, load_gallery, predict
from dermlib.predict.hub import DermModel, ModelFormatError, check_folder


def _line(scores: dict[str, float] | list[tuple[str, float]], digits: int = 3, limit: int | None = None) -> str:
    """`name 0.123  name 0.045 ...`, best first."""
    items = sorted(scores.items(), key=lambda kv: -kv[1]) if isinstance(scores, dict) else list(scores)
    return "  ".join(f"{name} {value:.{digits}f}" for name, value in items[:limit])


def render(pred: Prediction) -> str:
    """A prediction in a few human-readable lines."""
    head = f"{pred.image}: {pred.label} ({pred.label_name}) {pred.probabilities[pred.label]:.3f}"
    lines = [head, f"  probabilities   {_line(pred.probabilities)}"]
    if pred.zero_shot:
        lines.append(f"  zero-shot       {_line(pred.zero_shot)}  (cosine to the class prompts)")
    if pred.concepts:
        lines.append(f"  concepts        {_line([(c['concept'], c['score']) for c in pred.concepts])}")
    for n in pred.neighbours:
        text = n.get("note") or ""
        text = (text[:97] + "...") if len(text) > 100 else text
        what = "nearest notes " if n["kind"] == "note" else "nearest images"
        lines.append(f"  {what if n['rank'] == 1 else ' ' * len(what)}  {n['score']:.3f} {n['sample_id']} "
                     f"[{n['label']}]" + (f" {text}" if text else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`dermlib predict`: print (or --json) a prediction per image; 0 when every image was predicted, 1 when some
    could not be read, 2 for a model folder, gallery or argument that cannot be used."""
    called = Path(sys.argv[0]).name
    prog = called if called.startswith("dermlib") else "python -m dermlib.predict"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, TIFF, ...)")
    parser.add_argument("--model", required=True, metavar="MODEL_DIR", help="a folder written by `dermlib export`")
    parser.add_argument("--modality", choices=MODALITIES, default=None,
                        help="crop rule: dermoscopic (Otsu field of view) or clinical (whole image); "
                             "default: the model's preprocessor_config.json")
    parser.add_argument("--gallery", metavar="PARQUET",
                        help="embeddings_<split>.parquet written by `dermlib export --embeddings SPLIT`")
    parser.add_argument("-k", type=int, default=5, help="nearest notes to show from --gallery (default 5)")
    parser.add_argument("--concepts", type=int, default=5, metavar="N", help="top concept scores to show (default 5)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--json", action="store_true", help="one JSON list of per-image objects on stdout")
    args = parser.parse_args(argv)
    if args.k < 0 or args.concepts < 0:
        parser.error("-k and --concepts must be >= 0")
    try:
        check_folder(args.model)  # a local folder (a bare name is not looked up on the Hub here)
        model = DermModel.from_pretrained(args.model).to(args.device)
        gallery = load_gallery(args.gallery, model) if args.gallery else None
    except (ModelFormatError, GalleryError) as err:
        parser.exit(2, f"{prog}: error: {err}\n")
    preds = predict(model, args.images, modality=args.modality, gallery=gallery, k=args.k, concepts=args.concepts,
                    on_error="keep")
    failed = [p for p in preds if p.error]
    for p in failed:
        print(f"{prog}: error: {p.error}", file=sys.stderr)
    if args.json:
        print(json.dumps([p.to_dict() for p in preds], indent=1))
    else:
        if model.model_config.synthetic:
            print(f"model {model.model_config.run}: trained on synthetic data (SynthDerm); not for real patients")
        for p in preds:
            if not p.error:
                print(render(p))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
