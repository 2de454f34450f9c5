"""A small local web app over `dermlib.predict`: pick an exported model folder, drop an image, see its class
probabilities, zero-shot scores, top concepts and (with a gallery) its nearest notes.

    pip install "dermlib[app]"         # gradio, an optional extra
    dermlib app --model MODEL_DIR [--gallery MODEL_DIR/embeddings_test.parquet] [--port 7860]
    python -m dermlib.predict.app ...  (the same)

It serves http://127.0.0.1:PORT on this machine only: never 0.0.0.0, no share link; gradio's analytics, monitoring,
run history and MCP server off; uploads are deleted from gradio's cache once an hour old. A model trained on
SynthDerm shows a banner saying so: it is not for real patients.
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import lru_cache
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: it reads this at import

try:
    import gradio as gr
except ImportError:
    raise ImportError('the dermlib app needs gradio, an optional extra: pip install "dermlib[app]"') from None
import pandas as pd

from dermlib.predict.api import MODALITIES, Gallery, GalleryError, Prediction, load_gallery, predict
from dermlib.predict.hub import DermModel, ModelFormatError

HOST = "127.0.0.1"  # this machine only
DEFAULT = "model default"  # the modality choice that keeps the model's own preprocessing default
SYNTHETIC_BANNER = ("### ⚠️ Synthetic model — trained on SynthDerm, not for patients\n"
                    "Every image it learnt from was drawn by a program: its outputs say nothing about a real lesion.")
NOTE_CHARS = 200  # a neighbour's note is cut to this length in the table


@lru_cache(maxsize=4)
def load_model(folder: str) -> DermModel:
    """The model of an exported folder, loaded once (offline, CPU, eval mode)."""
    return DermModel.from_pretrained(folder)


@lru_cache(maxsize=4)
def load_gallery_for(folder: str, gallery: str) -> Gallery | str:
    """The gallery for this model, or why it cannot serve it (a gallery belongs to one exported run)."""
    try:
        return load_gallery(gallery, load_model(folder))
    except GalleryError as err:
        return str(err)


def model_folders(model_dir: str | Path) -> list[str]:
    """The default model folder first, then its sibling folders that hold an exported model (a config.json)."""
    first = Path(model_dir)
    siblings = sorted(p for p in first.resolve().parent.iterdir() if (p / "config.json").is_file()) \
        if first.resolve().parent.is_dir() else []
    return list(dict.fromkeys([str(first), *(str(p) for p in siblings if p.resolve() != first.resolve())]))


def banner(model: DermModel) -> str:
    """The synthetic warning, or the model's name and its intended use for a model of real data."""
    if model.model_config.synthetic:
        return SYNTHETIC_BANNER
    return f"Model `{model.model_config.run}`: a research model, not a medical device."


def verdict(pred: Prediction) -> str:
    """The top class in one line (or the image's error)."""
    if pred.error or pred.label is None:
        return f"**Could not use this image:** {pred.error}"
    return (f"**Predicted: {pred.label_name} ({pred.label})**, probability {pred.probabilities[pred.label]:.3f} "
            f"— model `{pred.model}`, {pred.modality} preprocessing")


def tables(pred: Prediction) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Zero-shot scores, concept scores and nearest notes as data frames for the plots and the table."""
    zero = pd.DataFrame({"class": list(pred.zero_shot), "cosine": list(pred.zero_shot.values())})
    concepts = pd.DataFrame({"concept": [c["concept"] for c in pred.concepts],
                             "score": [c["score"] for c in pred.concepts]})
    near = pd.DataFrame([{"rank": n["rank"], "score": round(n["score"], 3), "sample": n.get("sample_id"),
                          "label": n.get("label"), "note": (n.get("note") or "")[:NOTE_CHARS]}
                         for n in pred.neighbours], columns=["rank", "score", "sample", "label", "note"])
    return zero, concepts, near


def build_app(model_dir: str | Path, gallery: str | Path | None = None) -> gr.Blocks:
    """The app's page for this default model folder (loaded now: a bad folder fails here, not in the browser) and
    optional gallery parquet (`dermlib export RUN OUT --embeddings SPLIT`)."""
    model = load_model(str(model_dir))
    gallery_path = str(gallery) if gallery is not None else None
    if gallery_path is not None and isinstance(problem := load_gallery_for(str(model_dir), gallery_path), str):
        raise GalleryError(problem)

    def classify(folder: str, image: str | None, modality: str) -> tuple[object, ...]:
        """One prediction: (banner, verdict, probabilities, zero-shot, concepts, nearest notes, gallery note)."""
        try:
            chosen = load_model(folder)
        except (ModelFormatError, OSError, ValueError) as err:
            raise gr.Error(f"cannot load the model folder {folder}: {err}") from None
        found = load_gallery_for(folder, gallery_path) if gallery_path else None
        note = "" if not isinstance(found, str) else f"No nearest notes for this model: {found}"
        if image is None:
            return banner(chosen), "Drop an image above.", None, None, None, None, note
        pred = predict(chosen, [image], modality=None if modality == DEFAULT else modality,
                       gallery=found if isinstance(found, Gallery) else None, on_error="keep")[0]
        names = chosen.model_config.class_names
        probs = {f"{c} — {names.get(c, c)}": p for c, p in pred.probabilities.items()} or None
        zero, concepts, near = tables(pred)
        return banner(chosen), verdict(pred), probs, zero, concepts, near, note

    # uploads sit in gradio's cache (GRADIO_TEMP_DIR): checked hourly, deleted once an hour old
    with gr.Blocks(title="dermlib", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        header = gr.Markdown(banner(model), elem_id="dermlib-banner")
        with gr.Row():
            with gr.Column(scale=1):
                folder = gr.Dropdown(model_folders(model_dir), value=str(model_dir), allow_custom_value=True,
                                     label="Model folder (written by `dermlib export`)", elem_id="dermlib-model")
                modality = gr.Radio([DEFAULT, *MODALITIES], value=DEFAULT, label="Preprocessing (crop rule)")
                # filepath, no conversion: the file goes to predict() as uploaded (EXIF and crop done as in training)
                image = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                 label="Lesion image", elem_id="dermlib-image")
            with gr.Column(scale=2):
                result = gr.Markdown("Drop an image on the left.", elem_id="dermlib-verdict")
                probabilities = gr.Label(num_top_classes=len(model.model_config.classes),
                                         label="Class probabilities (classifier softmax)", elem_id="dermlib-probs")
                zero_shot = gr.BarPlot(x="class", y="cosine", label="Zero-shot: cosine to each class's prompts",
                                       elem_id="dermlib-zero-shot")
                concepts = gr.BarPlot(x="concept", y="score", sort="-y", label="Top concepts (cosine)",
                                      elem_id="dermlib-concepts")
        nearest = gr.Dataframe(label="Nearest notes in the gallery", visible=gallery_path is not None,
                               elem_id="dermlib-neighbours", wrap=True, interactive=False,
                               column_widths=["6%", "8%", "22%", "8%", "56%"])
        gallery_note = gr.Markdown("", elem_id="dermlib-gallery-note")
        gr.on([image.change, modality.change, folder.change], classify, [folder, image, modality],
              [header, result, probabilities, zero_shot, concepts, nearest, gallery_note])
    return app


def main(argv: list[str] | None = None) -> int:
    """`dermlib app`: serve the app on 127.0.0.1 until Ctrl+C; 2 for a model folder or gallery that cannot be used."""
    called = Path(sys.argv[0]).name
    prog = called if called.startswith("dermlib") else "python -m dermlib.predict.app"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="MODEL_DIR", help="a folder written by `dermlib export`")
    parser.add_argument("--gallery", metavar="PARQUET",
                        help="embeddings_<split>.parquet of `dermlib export --embeddings` (adds the nearest notes)")
    parser.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error("--port must be between 1 and 65535")
    try:
        app = build_app(args.model, args.gallery)
    except (ModelFormatError, GalleryError) as err:
        parser.exit(2, f"{prog}: error: {err}\n")
    except OSError as err:  # neither a folder nor a Hub id in the local cache (offline)
        parser.exit(2, f"{prog}: error: {args.model}: no such model folder ({type(err).__name__}); export a run into "
                       f"it with `dermlib export RUN_DIR {args.model}`\n")
    print(f"dermlib app: http://{HOST}:{args.port} (this machine only; Ctrl+C stops it)", flush=True)
    try:
        app.launch(server_name=HOST, server_port=args.port, share=False, inbrowser=False, show_error=True,
                   ssr_mode=False, mcp_server=False, enable_monitoring=False, run_history=False,
                   footer_links=["settings"], max_file_size="25mb")
    except OSError as err:  # the port is taken
        parser.exit(2, f"{prog}: error: port {args.port} on {HOST} is in use ({err}); choose another with --port\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
