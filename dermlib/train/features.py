"""Frozen encoders' outputs, computed once and kept on disk, so that a grid trains only what learns.

With `train.freeze_image_encoder` (the demo), the pretrained image trunk runs once per image and *view* (pooled
features; or, with `train.trunk_adapter_rank` > 0, the float16 maps before the trainable adapter: the last block's
output and the frozen conv_head of it, see `dermlib.train.trunk`): view 0 is
the cached image as it is, views 1..V-1 are fixed augmentations (the flips and brightness/contrast jitter of
`dermlib.train.batches.augment`, drawn for all rows at once from a generator seeded by the view number, never by
a run's seed or the batch size). A training epoch then picks one view per image. A frozen text encoder's pooled
output is likewise computed once per note, and rounded to float16.
A *note store* (`train.note_features`, written by `dermlib.train.features.write_profile_note_store`) ships such features
beside a committed note cache, one row per note keyed by `note_key` (encoder name, weights version, pooling,
FEATURE_VERSION and token ids): a note found there is not encoded again, any other note is, with a warning. The
demo's is `data/note-features-demo.npz`.
Files live in `<work_dir>/features/`, named by a hash of everything that decides them (encoder, weights, image
cache, rows and views; or the notes' token ids), so every strategy and seed of a grid reads the same features.
A pass of several batches shows a progress bar where `dermlib.progress` allows one (a terminal, not a log).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import os
import sys
import warnings
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from dermlib.atomic import atomic_path
from dermlib.config import REPO_ROOT, add_cli_arguments, config_from_cli, shown
from dermlib.progress import progress
from dermlib.train.batches import augment, augment_draws, images_to_float, pad_batch, tokenize
from dermlib.notes.store import notes_by_sample
from dermlib.train.model import TextEncoder, text_weights_version, torch_threads
from dermlib.train.settings import TrainSettings
from dermlib.workdir import WorkDir

FEATURE_VERSION = 3  # bump when the way features are computed changes (it is part of every run's hash too)
# Frozen encoders on a CPU run fastest in small batches that stay in cache (and the image trunk in channels_last).
# On the 2-core demo machine (benchmarks/bench_frozen_features.py, benchmarks/results/frozen_features.json):
# EfficientNet-Lite0 at 128 px did 35 images/s in contiguous batches of 128 and 125/s in channels_last batches of
# 16; MiniLM on the demo's M+P2 notes did 17 notes/s in batches of 128 and 27/s in batches of 16. A GPU keeps the
# caller's batch size.
CPU_BATCH = 16


def _step(batch_size: int, device: torch.device) -> int:
    """The batch a frozen pass uses: the caller's on a GPU, at most CPU_BATCH on a CPU."""
    return batch_size if device.type == "cuda" else min(batch_size, CPU_BATCH)


def _digest(parts: dict[str, Any], arrays: list[np.ndarray]) -> str:
    digest = hashlib.sha256(json.dumps({**parts, "version": FEATURE_VERSION}, sort_keys=True).encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:20]


def every_core() -> AbstractContextManager[None]:
    """torch on every CPU core inside the block (`torch_threads`): frozen encoders' features are computed once, by
    the first run of a grid, while the grid's other cores would wait. They are the same bits on every run of one
    machine, and agree with a one-thread pass up to the float16 they are stored in (on the demo's 2-core machine the
    demo's trunk maps came out bit-identical on one thread and on two)."""
    return torch_threads(max(torch.get_num_threads(), os.cpu_count() or 1))


def _stored(path: Path, compute: Any, mmap: bool = False) -> np.ndarray:
    """Load `path` (`mmap`: as a read-only memory map), or compute, write atomically (a crash never leaves half a
    file) and return."""
    if path.exists():
        return np.load(path, mmap_mode="r" if mmap else None)
    with every_core():
        values = compute()
    with atomic_path(path) as tmp:
        np.save(tmp, values)
    return np.load(path, mmap_mode="r") if mmap else values


def note_key(identity: str, ids: Sequence[int]) -> bytes:
    """16 bytes naming one note's frozen text features: the encoder identity, FEATURE_VERSION and its token ids."""
    digest = hashlib.sha256(f"{identity}|{FEATURE_VERSION}|".encode())
    digest.update(np.asarray(ids, dtype=np.int64).tobytes())
    return digest.digest()[:16]


def note_store_path(cfg: dict[str, Any]) -> Path | None:
    """`train.note_features` as a path (a relative one is under the repository), or None where it is not set."""
    name, encoder = cfg["train"].get("note_features"), cfg["train"]["text_encoder"]
    if not name:
        return None
    if not text_weights_version(encoder):
        raise ValueError(f"train.note_features = {name!r}: a note store needs a text encoder whose weights dermlib "
                         f"can name (minilm-l6), so that it never serves another encoder's features; for "
                         f"{encoder!r} set train.note_features to null")
    return Path(name) if Path(name).is_absolute() else REPO_ROOT / name


@dataclass(frozen=True)
class NoteStore:
    """A note store as read from disk: its file, a fingerprint of its bytes, {note_key: row} and the float16
    features (rows x H, read-only)."""

    path: Path
    fingerprint: str
    index: dict[bytes, int]
    values: np.ndarray


def _store_fix(path: Path) -> str:
    inside = path.resolve().is_relative_to(REPO_ROOT.resolve())
    restore = f"restore it (git checkout -- {path.resolve().relative_to(REPO_ROOT.resolve())}), " if inside else ""
    return (f"write it again (python -m dermlib.train.features --profile <profile>, after notebook 02), {restore}or run "
            f"without it (--set train.note_features=null)")


@functools.lru_cache(maxsize=2)
def _load_store(path: Path, stamp: tuple[int, ...]) -> NoteStore:
    data = path.read_bytes()
    try:
        with np.load(io.BytesIO(data)) as archive:
            keys, values = archive["keys"], archive["features"]
    except Exception as err:
        raise ValueError(f"note store {path} cannot be read ({err}): {_store_fix(path)}") from err
    if keys.ndim != 2 or keys.shape[1] != 16 or values.ndim != 2 or len(keys) != len(values):
        raise ValueError(f"note store {path}: keys {keys.shape} and features {values.shape} are not (N, 16) and "
                         f"(N, H): {_store_fix(path)}")
    values.setflags(write=False)
    return NoteStore(path, hashlib.sha256(data).hexdigest()[:16], {bytes(k): i for i, k in enumerate(keys)}, values)


def read_note_store(path: str | Path) -> NoteStore | None:
    """The note store at `path`, or None where there is no such file (read once per version of the file)."""
    path = Path(path)
    if not path.exists():
        return None
    st = path.stat()
    return _load_store(path, (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))


def write_note_store(path: str | Path, keys: Sequence[bytes], values: np.ndarray) -> Path:
    """Write a note store (atomically): one row per distinct key, sorted, features as float16."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or len(values) != len(keys) or any(len(k) != 16 for k in keys):
        raise ValueError(f"a note store needs one 16-byte key per feature row: {len(keys)} keys, features "
                         f"{values.shape}")
    unique = {bytes(k): i for i, k in enumerate(keys)}  # a repeated note keeps one row
    order = sorted(unique)
    path = Path(path)
    with atomic_path(path) as tmp:
        np.savez(tmp, keys=np.frombuffer(b"".join(order), dtype=np.uint8).reshape(len(order), 16),
                 features=values[[unique[k] for k in order]].astype(np.float16))
    return path


def cache_fingerprint(cache_dir: str | Path) -> str:
    """The preprocessed image cache's fingerprint (from its cache_meta.json; "" when it has none)."""
    meta = Path(cache_dir) / "cache_meta.json"
    return json.loads(meta.read_text()).get("fingerprint", "") if meta.exists() else ""


@torch.no_grad()
def image_features(encoder: torch.nn.Module, images: np.ndarray, rows: np.ndarray, *, views: int, identity: str,
                   folder: str | Path, device: torch.device, batch_size: int = 128) -> np.ndarray:
    """A frozen trunk's output for cache rows `rows` in each view: float32 (views, len(rows), D) pooled features,
    or, for an encoder with a trunk adapter (`dermlib.train.trunk`), the maps before it: float16
    (views, len(rows), P, C), read back as a read-only memory map (every run of a grid shares its pages).

    `identity` names the encoder and its weights (e.g. "efficientnet_lite0:pretrained") and the image cache.
    """
    maps = getattr(encoder, "adapter", None) is not None
    key = _digest({"kind": "image_maps" if maps else "image", "identity": identity, "views": int(views)},
                  [rows.astype(np.int64)])
    path = Path(folder) / f"image-{'maps-' if maps else ''}{key}.npy"

    def compute() -> np.ndarray:
        was_training = encoder.training
        encoder.eval()
        encoder.to(memory_format=torch.channels_last)  # a frozen trunk: its weights' layout is all that changes
        step = _step(batch_size, device)
        out: np.ndarray | None = None if maps else np.zeros((views, len(rows), encoder.out_dim), dtype=np.float32)
        # no bar for a pass of one batch (the few prompts of a zero-shot ensemble): it would finish at once
        with progress(views * len(rows), f"image {'maps' if maps else 'features'} ({views} view{'s' * (views != 1)})",
                      unit="img", show=views * len(rows) > batch_size) as bar:
            for view in range(views):
                # every image's draws of this view at once, so they do not depend on the batch size
                draws = augment_draws(len(rows), torch.Generator().manual_seed(10_007 * view))
                for start in range(0, len(rows), step):
                    chunk = rows[start: start + step]
                    order = np.argsort(chunk, kind="stable")
                    pixels = np.empty((len(chunk), *images.shape[1:]), dtype=np.uint8)
                    pixels[order] = images[chunk[order]]
                    x = images_to_float(torch.from_numpy(pixels).to(device))  # channels_last, as augment's
                    if view:
                        x = augment(x, None, draws=(draws[0][start: start + step], draws[1][start: start + step]))
                    values = (encoder.maps(x) if maps else encoder(x)).float().cpu().numpy()
                    if out is None:  # maps: (P, C) are known once the first batch went through
                        out = np.zeros((views, len(rows), *values.shape[1:]), dtype=np.float16)
                    out[view, start: start + len(chunk)] = values
                    bar.update(len(chunk))
        encoder.train(was_training)
        return out if out is not None else np.zeros((views, 0, 0, 0), dtype=np.float16)  # no rows

    return _stored(path, compute, mmap=maps)


@torch.no_grad()
def text_features(encoder: torch.nn.Module, token_lists: list[list[int]], *, pad_id: int, identity: str,
                  folder: str | Path, device: torch.device, batch_size: int = 128,
                  store: str | Path | None = None) -> np.ndarray:
    """float32 (len(token_lists), H): a frozen text encoder's pooled output per note (eval mode), rounded to float16;
    the notes the note store `store` holds are read from it, the others are encoded (with a warning that says so).
    Stored and encoded features agree to float16 rounding (an encoded note's last bit may depend on its batch)."""
    stored = read_note_store(store) if store is not None else None
    lengths = np.array([len(t) for t in token_lists], dtype=np.int64)
    flat = np.array([i for t in token_lists for i in t], dtype=np.int64)
    key = _digest({"kind": "text", "identity": identity, "store": stored.fingerprint if stored else ""},
                  [lengths, flat])
    path = Path(folder) / f"text-{key}.npy"

    def compute() -> np.ndarray:
        was_training = encoder.training
        encoder.eval()
        out = np.zeros((len(token_lists), encoder.out_dim), dtype=np.float32)
        todo = np.arange(len(token_lists))
        if stored is not None and len(token_lists):
            rows = np.array([stored.index.get(note_key(identity, t), -1) for t in token_lists], dtype=np.int64)
            if (rows >= 0).any() and stored.values.shape[1] != out.shape[1]:
                raise ValueError(f"note store {stored.path} holds {stored.values.shape[1]}-wide features, the encoder "
                                 f"gives {out.shape[1]}: {_store_fix(stored.path)}")
            out[rows >= 0] = stored.values[rows[rows >= 0]]
            todo = np.flatnonzero(rows < 0)
        if store is not None and len(todo):
            held = "is absent" if stored is None else f"lacks {len(todo)} of these {len(token_lists)} notes"
            warnings.warn(f"note store {shown(store)} {held}: encoding {len(todo)} notes here; "
                          f"{_store_fix(Path(store))}", stacklevel=2)
        order = todo[np.argsort(lengths[todo], kind="stable")]  # similar lengths together: little padding
        step = _step(batch_size, device)
        with progress(len(order), "text features", unit="text", show=len(order) > batch_size) as bar:
            for start in range(0, len(order), step):
                chosen = order[start: start + step]
                ids, mask = pad_batch([token_lists[i] for i in chosen], pad_id)
                pooled = encoder(ids.to(device), mask.to(device)).float().cpu().numpy()
                out[chosen] = pooled.astype(np.float16)  # the store's precision, stored or not
                bar.update(len(chosen))
        encoder.train(was_training)
        return out

    return _stored(path, compute)


def image_identity(cfg: dict[str, Any]) -> str:
    """What decides a frozen trunk's features: encoder, weights and the preprocessed image cache."""
    cache = cache_fingerprint(WorkDir.of(cfg).cache)
    return f"{cfg['train']['image_encoder']}:pretrained={cfg['train']['pretrained']}:cache={cache}"


def text_identity(cfg: dict[str, Any]) -> str:
    """What decides a frozen text encoder's features (besides the token ids): encoder, its weights, pooling."""
    name = cfg["train"]["text_encoder"]
    return f"{name}:{cfg['train']['pooling']}:{text_weights_version(name)}"


def write_profile_note_store(cfg: dict[str, Any]) -> Path:
    """Encode every usable note of the profile's notes table (notebook 02) with its frozen text encoder, tokenised
    as training does, and write them to `train.note_features`; returns that path. Notes the store already holds
    (same `note_key`) are copied from it, only the others are encoded; notes no longer in the table are dropped."""
    t = TrainSettings.from_config(cfg)
    path = note_store_path(cfg)
    if path is None or t.train_last_n_text_layers != 0:
        raise ValueError("a note store needs train.note_features set and a frozen text encoder "
                         "(train.train_last_n_text_layers = 0)")
    encoder = TextEncoder(t.text_encoder, t.pooling, 0)
    by_sample = notes_by_sample(WorkDir.of(cfg).root, list(cfg["notes"]["strategies"]))
    texts = sorted({note for notes in by_sample.values() for note in notes})
    ids = tokenize(encoder.tokenizer, texts, t.max_text_len)
    identity = text_identity(cfg)
    keys = [note_key(identity, i) for i in ids]
    old = read_note_store(path)
    rows = np.array([old.index.get(k, -1) if old is not None else -1 for k in keys], dtype=np.int64)
    new = np.flatnonzero(rows < 0)
    if old is not None and (rows >= 0).any() and old.values.shape[1] != encoder.out_dim:
        raise ValueError(f"note store {shown(path)} holds {old.values.shape[1]}-wide features, {t.text_encoder} gives "
                         f"{encoder.out_dim}: delete it and write it again")
    values = np.zeros((len(keys), encoder.out_dim), dtype=np.float32)
    if old is not None:
        values[rows >= 0] = old.values[rows[rows >= 0]]
    if len(new):
        values[new] = text_features(encoder, [ids[i] for i in new], pad_id=int(encoder.tokenizer.pad_token_id),
                                    identity=identity, folder=WorkDir.of(cfg).features, device=torch.device("cpu"))
    print(f"[features] {len(keys)} notes: {len(keys) - len(new)} read from the store, {len(new)} encoded")
    return write_note_store(path, keys, values)


def main(argv: list[str] | None = None) -> int:
    """CLI: `python -m dermlib.train.features --profile demo` writes the profile's note store (after notebook 02)."""
    parser = argparse.ArgumentParser(description="Write a profile's note store (see write_profile_note_store).")
    add_cli_arguments(parser)
    cfg, _ = config_from_cli(parser, parser.parse_args(argv))
    path = write_profile_note_store(cfg)
    print(f"[features] note store -> {shown(path)} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
