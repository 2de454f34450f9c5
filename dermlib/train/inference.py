"""Use a finished run: load it back (`load_run`, offline) and embed images and notes with it (`encode`,
`encode_texts`).

Checkpoints hold only what trains (`trainable_state`, a trunk adapter included): frozen encoders, and the frozen
layers of a partly trained one, come back from their pretrained source (the offline packages for the demo; the
Hugging Face cache for PubMedBERT), so a checkpoint is the size of what trains. Checkpoints written before frozen
layers were left out (every text-encoder weight in them) still load, offline, as they did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dermlib.progress import progress
from dermlib.train import features
from dermlib.train.batches import images_to_float, pad_batch, tokenize
from dermlib.train.features import image_identity, text_identity
from dermlib.train.loop import load_trainable, read_checkpoint
from dermlib.train.model import MultimodalModel, autocast, build_model
from dermlib.train.settings import TrainSettings
from dermlib.workdir import WorkDir


def load_run(run_dir: str | Path, checkpoint: str = "best") -> tuple[MultimodalModel, dict[str, Any]]:
    """The best-epoch model of a finished run (or, `checkpoint="last"`, its last epoch's; eval mode, CPU) and its
    resolved config; works offline."""
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', not {checkpoint!r}")
    folder = Path(run_dir)
    if not (folder / "done").exists():
        raise FileNotFoundError(f"{folder} is not a finished run (no `done` marker): train it with "
                                f"dermlib.train.runs.fit (notebook 03_train)")
    cfg = json.loads((folder / "config.json").read_text())
    t = TrainSettings.from_config(cfg)
    # frozen weights are not in the checkpoint: they come back from their pretrained source (offline packages
    # for the demo); a text encoder whose every weight the checkpoint holds (fully trained, or an older
    # checkpoint) is built empty from the run's saved config and filled from it
    state = checkpoint_state(folder, checkpoint)
    whole_text = t.text and any(k.startswith("text_encoder.encoder.embeddings.") for k in state)
    text_dir = folder / "text_encoder" if whole_text else None
    model = build_model(t, len(cfg["resolved"]["classes"]), pretrained=t.freeze_image_encoder and t.pretrained,
                        text_dir=text_dir)
    load_trainable(model, state)
    return model.eval(), cfg


def checkpoint_state(run_dir: str | Path, checkpoint: str = "best") -> dict[str, torch.Tensor]:
    """The trained weights of a run's best epoch (or its last: `checkpoint="last"`), for `load_trainable` into a
    model `load_run` built (one model can then be evaluated at both epochs)."""
    saved = read_checkpoint(Path(run_dir) / "checkpoint.pt")
    best = saved["best_model"] if checkpoint == "best" else None
    return best if best is not None else saved["model"]


@torch.no_grad()
def encode(model: MultimodalModel, images_uint8: np.ndarray, notes: list[str | None] | None,
           config: dict[str, Any], batch_size: int = 256, *, pool_id: str | None = None) -> dict[str, np.ndarray]:
    """Embed images (uint8 [N,S,S,3], e.g. from the cache) and optionally one note per image.

    Returns float32 numpy arrays `image_emb` (N,E) and `image_logits` (N,C); with notes also `text_emb` and
    `text_logits` (rows whose note is None are NaN). Embeddings are the RAW projections (not L2-normalised):
    normalise before cosine similarity / retrieval. Runs on the model's device, in eval mode. With `pool_id`
    (a name for exactly these images), frozen encoders' outputs are read from / kept in `<work_dir>/features`,
    so a grid of runs encodes the pool once (a frozen trunk with an adapter: its maps, and each run applies its
    own adapter to them, as in training).
    """
    if notes is not None and len(notes) != len(images_uint8):
        raise ValueError(f"encode: {len(images_uint8)} images but {len(notes)} notes")
    if notes is not None and model.text_encoder is None:
        raise ValueError("encode: notes given to an image-only (Img) model")
    if images_uint8.ndim != 4 or images_uint8.shape[-1] != 3 or images_uint8.dtype != np.uint8:
        raise ValueError(f"encode: images must be uint8 [N,S,S,3], got {images_uint8.dtype} {images_uint8.shape}")
    model.eval()
    device = next(model.parameters()).device
    frozen = model.frozen_prefixes() if pool_id is not None else ()
    folder = WorkDir.of(config).features
    out: dict[str, list[np.ndarray]] = {"image_emb": [], "image_logits": []}
    trunk = None
    if pool_id is not None and model.trunk_frozen():  # pooled features, or the maps before a trunk adapter
        trunk = features.image_features(model.image_encoder, images_uint8, np.arange(len(images_uint8)), views=1,
                                        identity=f"{image_identity(config)}:pool={pool_id}", folder=folder,
                                        device=device, batch_size=batch_size)[0]
    # leave=False: encode runs inside longer loops (a grid's evaluations, an export's splits), whose bars remain
    with progress(len(images_uint8), "encode images", unit="img", leave=False) as bar:
        for start in range(0, len(images_uint8), batch_size):
            with autocast(device):
                if trunk is not None:  # a copy: maps are a read-only memory map
                    cached = torch.from_numpy(np.array(trunk[start: start + batch_size])).to(device)
                    emb = model.image_proj(model.image_encoder.from_cache(cached))
                else:  # a copy: the cache is a read-only memory map, which torch must not wrap
                    x = images_to_float(torch.from_numpy(np.array(images_uint8[start: start + batch_size]))
                                        .to(device))
                    emb = model.encode_image(x)
                out["image_emb"].append(emb.float().cpu().numpy())
                out["image_logits"].append(model.classifier(emb).float().cpu().numpy())
            bar.update(len(emb))
    if notes is not None:
        kept = [i for i, n in enumerate(notes) if n is not None]
        emb, logits = _text_branch(model, [notes[i] for i in kept], config, batch_size, "text_encoder." in frozen,
                                   desc="encode notes", notes=True)
        text_emb = np.full((len(notes), emb.shape[1]), np.nan, dtype=np.float32)
        text_logits = np.full((len(notes), logits.shape[1]), np.nan, dtype=np.float32)
        text_emb[kept], text_logits[kept] = emb, logits
        out["text_emb"], out["text_logits"] = [text_emb], [text_logits]
    return {k: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for k, v in out.items()}


def _text_branch(model: MultimodalModel, texts: list[str], config: dict[str, Any], batch_size: int,
                 cached: bool, desc: str | None = None, notes: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Raw text projections (n, E) and classifier logits (n, C); with `cached`, the frozen encoder's pooled outputs
    come from / go to `<work_dir>/features` (and, for `notes`, the note store) and only the projection head runs
    here. A progress bar named `desc` (none for a handful of prompts)."""
    tok = model.text_encoder.tokenizer
    ids = tokenize(tok, texts, config["train"]["max_text_len"])
    device = next(model.parameters()).device
    pooled = None
    if cached and ids:
        pooled = features.text_features(model.text_encoder, ids, pad_id=int(tok.pad_token_id),
                                        identity=text_identity(config), folder=WorkDir.of(config).features,
                                        device=device, batch_size=batch_size,
                                        store=features.note_store_path(config) if notes else None)
    embs = [np.zeros((0, model.classifier.in_features), np.float32)]  # so that no text still gives (0, E)
    logits = [np.zeros((0, model.classifier.out_features), np.float32)]
    with progress(len(ids), desc or "", unit="note", leave=False, show=desc is not None) as bar:
        for start in range(0, len(ids), batch_size):
            with autocast(device):
                if pooled is not None:
                    emb = model.text_proj(torch.from_numpy(pooled[start: start + batch_size]).to(device))
                else:
                    input_ids, mask = pad_batch(ids[start: start + batch_size], int(tok.pad_token_id))
                    emb = model.encode_text(input_ids.to(device), mask.to(device))
                embs.append(emb.float().cpu().numpy())
                logits.append(model.classifier(emb).float().cpu().numpy())
            bar.update(len(emb))
    return np.concatenate(embs), np.concatenate(logits)


@torch.no_grad()
def encode_texts(model: MultimodalModel, texts: list[str], config: dict[str, Any], batch_size: int = 64) -> np.ndarray:
    """Raw text projections (n, E) of free texts (prompts, phrases) through a run's text branch.

    A frozen text encoder's pooled outputs are kept in `<work_dir>/features` (as for notes in `encode`), so a
    grid of runs encodes the same prompts once and each run applies only its own projection head."""
    if model.text_encoder is None:
        raise ValueError("encode_texts: an image-only (Img) model has no text branch")
    model.eval()
    return _text_branch(model, texts, config, batch_size, "text_encoder." in model.frozen_prefixes())[0]
