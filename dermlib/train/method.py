"""The model and its loss put in front of the reader (notebook 03): a diagram drawn from a built model, its
parameters part by part (which train, which are frozen), and the inputs of each loss term on a real batch.

Nothing here is used by training; every number is read from the model or the run, never typed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dermlib.train.inference import load_run
from dermlib.train.model import MultimodalModel

TRUNKS = {"efficientnet_lite0": "EfficientNet-Lite0", "densenet121": "DenseNet121"}


def _parts(model: MultimodalModel) -> list[tuple[str, list[torch.nn.Parameter]]]:
    """(name, parameters) of each part, in the order data flows; a parameter shared by two parts is counted once,
    in the first (the shared classifier, a shared projection head)."""
    image = model.image_encoder
    seen: set[int] = set()
    parts = []
    for name, module in [(f"image trunk ({TRUNKS.get(image.name, image.name)})", image.trunk),
                         ("trunk adapter (LoRA + batch-norm affine)", image.adapter),
                         ("text encoder", model.text_encoder), ("image projection head", model.image_proj),
                         ("text projection head", model.text_proj), ("shared classifier", model.classifier)]:
        if module is None:
            continue
        params = [p for p in module.parameters() if id(p) not in seen]
        seen |= {id(p) for p in params}
        parts.append((name, params))
    return parts


def parameter_table(model: MultimodalModel) -> pd.DataFrame:
    """Per part of the model: parameters, how many of them train, and a total row (frozen parts are computed once
    and cached: only the trainable ones cost anything per epoch)."""
    rows = [{"part": name, "parameters": sum(p.numel() for p in params),
             "trainable": sum(p.numel() for p in params if p.requires_grad)} for name, params in _parts(model)]
    table = pd.DataFrame(rows)
    table.loc[len(table)] = {"part": "total", "parameters": table["parameters"].sum(),
                             "trainable": table["trainable"].sum()}
    table["share trainable"] = table["trainable"] / table["parameters"]
    return table.set_index("part")


def model_diagram(model: MultimodalModel, image_size: int) -> str:
    """A text diagram of the data flow with the sizes of this model (Markdown code block): two branches into one
    shared space and one shared classifier; what is frozen, what trains."""
    image, text = model.image_encoder, model.text_encoder
    dim = model.classifier.in_features
    n_classes = model.classifier.out_features
    trunk = f"{TRUNKS.get(image.name, image.name)} ({'frozen' if image.trunk_frozen() else 'trains'})"
    pooled = image.out_dim
    adapter = (f" -> LoRA r={image.adapter.rank} on conv_head + BN affine (trains)" if image.adapter is not None else "")
    lines = [f"image 3x{image_size}x{image_size} -> {trunk}{adapter} -> average pool -> {pooled}",
             f"    -> image projection head ({pooled} -> {dim}, trains) -> u  (image embedding)"]
    if text is not None:
        frozen = "frozen" if model.text_frozen() else "trains in part"
        lines += [f"note (tokens) -> {text.name} ({frozen}) -> {text.pooling} pooling -> {text.out_dim}",
                  f"    -> text projection head ({text.out_dim} -> {dim}, trains) -> v  (note embedding)",
                  f"u, v in one {dim}-d shared space: L1(u, v), 1 - cos(u, v), NT-Xent over the batch",
                  f"u -> shared classifier ({dim} -> {n_classes}) -> CE(image);  v -> same classifier -> CE(note)"]
    else:
        lines += [f"u -> classifier ({dim} -> {n_classes}) -> CE(image)   (Img: no note, no text branch)"]
    lines.append("inference: image -> u -> classifier (the note is never needed)")
    return "```text\n" + "\n".join(lines) + "\n```"


def loss_inputs(batch: dict[str, np.ndarray], run_dir: str | Path) -> dict[str, Any]:
    """What each loss term reads on a lesson batch (`dermlib.train.lessons.training_batch`): the raw image and note
    embeddings u, v, the shared classifier's logits of each, the class index y, and the run's model and classes."""
    model, run_cfg = load_run(run_dir)
    classes = list(run_cfg["resolved"]["classes"])
    u = torch.from_numpy(np.asarray(batch["image_raw"], dtype=np.float32))
    v = torch.from_numpy(np.asarray(batch["text_raw"], dtype=np.float32))
    with torch.no_grad():
        logits_u, logits_v = model.classifier(u).numpy(), model.classifier(v).numpy()
    return {"u": u.numpy(), "v": v.numpy(), "logits_image": logits_u, "logits_note": logits_v,
            "y": np.array([classes.index(c) for c in batch["label"]]), "classes": classes, "model": model,
            "temperature": float(run_cfg["train"]["temperature"]),
            "weights": {k: float(v) for k, v in (run_cfg["train"].get("loss_weights") or {}).items()}}
