"""Training data: manifest + preprocessed uint8 image cache + notes, tokenised once, served as device batches.

Nothing is decoded per step: images come from the cache written by notebook 01 (uint8 [N, S, S, 3]), notes are
tokenised once up front and padded per batch to the batch's longest note (dynamic padding). Augmentation (the 8
flips/rotations of the square, mild brightness/contrast) runs on the training device; its random numbers come
from a CPU generator seeded by (seed, epoch, batch), so a run is reproducible on any device and after a resume.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

# pandas and dermlib.data are imported where used: the batch builders must run on a bare torch install (benchmark)


@dataclass
class Split:
    """One split in memory: cache rows, integer labels and, per sample, its tokenised notes (possibly none)."""

    sample_ids: list[str]
    images: np.ndarray  # the whole cache, uint8 [M, S, S, 3], may be a read-only memory map
    rows: np.ndarray  # int64 [N]: cache row of each sample
    labels: np.ndarray  # int64 [N], index into the taxonomy's class list
    notes: list[list[list[int]]] = field(default_factory=list)  # per sample: token-id lists, [] = no usable note
    note_features: list[np.ndarray] | None = None  # per sample (n_notes, H): a frozen text encoder's output
    # (views, N, D) pooled, or (views, N, P, C) maps before a trunk adapter: a frozen trunk's output (train.features)
    image_features: np.ndarray | None = None
    sources: np.ndarray | None = None  # [N] str: each sample's source (validation metrics within a source)

    def __len__(self) -> int:
        return len(self.sample_ids)


_TOKENIZED: OrderedDict[tuple[str, int, int, str], list[tuple[int, ...]]] = OrderedDict()  # the last few calls


def tokenize(tokenizer: Any, texts: list[str], max_len: int) -> list[list[int]]:
    """Token ids (with special tokens, truncated to `max_len`, unpadded) for each text.

    The last few results are kept per process (keyed by the tokenizer's name and size, `max_len` and the texts), so
    a grid that encodes the same notes for every seed tokenises them once."""
    if not texts:
        return []
    name = str(getattr(tokenizer, "name_or_path", "") or "")
    if not name:  # a tokenizer without a name (built in memory) cannot be told apart: no memory
        return [list(ids) for ids in tokenizer(texts, truncation=True, max_length=max_len, padding=False)["input_ids"]]
    digest = hashlib.sha256("\x00".join(texts).encode("utf-8", "surrogatepass")).hexdigest()
    key = (name, len(tokenizer), int(max_len), digest)
    if key not in _TOKENIZED:
        ids = tokenizer(texts, truncation=True, max_length=max_len, padding=False)["input_ids"]
        _TOKENIZED[key] = [tuple(i) for i in ids]
        while len(_TOKENIZED) > 8:
            _TOKENIZED.popitem(last=False)
    _TOKENIZED.move_to_end(key)
    return [list(ids) for ids in _TOKENIZED[key]]


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token-id lists to the longest in the batch: (input_ids, attention_mask), both int64 (N, L)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def load_splits(cfg: dict[str, Any], tokenizer: Any = None) -> dict[str, Split]:
    """The train and val splits of `cfg["work_dir"]`, with notes of `cfg["train"]["strategy"]` tokenised once."""
    # here, not at the top: the batch builders must import on a bare torch install (benchmarks on a GPU machine)
    from dermlib.data.labels import classes, to_binary
    from dermlib.data.preprocess import cache_rows, load_cache
    from dermlib.data.schema import read_manifest
    from dermlib.notes.store import notes_by_sample
    from dermlib.grammar import parse_strategy
    from dermlib.workdir import WorkDir

    work = WorkDir.of(cfg)
    manifest = read_manifest(work.manifest)
    images, index = load_cache(work.cache)
    taxonomy = cfg["data"]["taxonomy"]
    names = classes(taxonomy)
    strategies = parse_strategy(cfg["train"]["strategy"])
    notes = notes_by_sample(work.root, strategies) if strategies else {}
    if strategies and tokenizer is None:
        raise ValueError("a tokenizer is needed to train with notes")
    splits = {}
    for split in ("train", "val"):
        part = manifest[(manifest["split"] == split) & manifest["label"].notna()].sort_values("sample_id",
                                                                                              kind="stable")
        if part.empty:
            raise ValueError(f"{work.manifest}: no labelled rows with split={split!r}; "
                             f"assign splits in notebook 01_data")
        part, rows = cache_rows(part, index, work.cache, missing="raise", what=split)
        ids = part["sample_id"].astype(str).tolist()
        labels = part["label"].astype(str).map(to_binary) if taxonomy == "binary" else part["label"].astype(str)
        unknown = sorted(set(labels) - set(names))
        if unknown:
            raise ValueError(f"{work.manifest}: labels {unknown} are not in taxonomy {taxonomy!r}")
        per_sample = [notes.get(s, []) for s in ids]
        flat = tokenize(tokenizer, [n for ns in per_sample for n in ns], cfg["train"]["max_text_len"])
        tokens, pos = [], 0
        for ns in per_sample:
            tokens.append(flat[pos: pos + len(ns)])
            pos += len(ns)
        splits[split] = Split(ids, images, rows, np.array([names.index(y) for y in labels], dtype=np.int64), tokens,
                              sources=part["source"].astype(str).to_numpy())
    return splits


def epoch_order(n: int, batch_size: int, seed: int, epoch: int, *, shuffle: bool = True, rank: int = 0,
                world: int = 1, drop_last: bool = True) -> list[np.ndarray]:
    """This rank's batches of one epoch: a (seed, epoch)-seeded permutation cut into global batches of `batch_size`,
    each split evenly over the `world` ranks. Training drops the last partial batch (NT-Xent wants full batches)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    batches = [perm[i: i + batch_size] for i in range(0, n, batch_size)]
    if drop_last and len(batches) > 1 and len(batches[-1]) < batch_size:
        batches = batches[:-1]
    if world > 1:
        batches = [b[: len(b) - len(b) % world] for b in batches]
        batches = [b[rank::world] for b in batches if len(b)]
    return batches


def choose_notes(split: Split, idx: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """Which note each sample uses (random among several when `rng`, else the first); -1 = no usable note."""
    picks = np.full(len(idx), -1, dtype=np.int64)
    for k, i in enumerate(idx):
        n = len(split.notes[i])
        if n:
            picks[k] = int(rng.integers(n)) if rng is not None and n > 1 else 0
    return picks


def make_batch(split: Split, idx: np.ndarray, *, with_text: bool, pad_id: int, cls_sep: tuple[int, int] | None,
               rng: np.random.Generator | None = None, pin: bool = False) -> dict[str, torch.Tensor]:
    """CPU tensors for one batch: uint8 images (N,S,S,3) or, when the split carries a frozen trunk's features,
    one view of them per image; labels; and with text a has-note mask plus either padded token ids and mask or,
    when the split carries precomputed features of a frozen text encoder, those features.

    Samples without a note get a minimal [CLS][SEP] sequence (or zero features) so the text branch always sees
    the whole batch (equal shapes on every rank); `text_mask` keeps them out of the text losses.
    """
    batch = {"labels": torch.from_numpy(split.labels[idx])}
    if split.image_features is not None:  # a frozen trunk: one of its cached views per image (drawn first)
        n_views = split.image_features.shape[0]
        views = rng.integers(n_views, size=len(idx)) if rng is not None and n_views > 1 else np.zeros(len(idx), int)
        batch["image_features"] = torch.from_numpy(split.image_features[views, idx])
    else:
        rows = split.rows[idx]
        order = np.argsort(rows, kind="stable")  # read the (memory-mapped) cache in file order
        images = np.empty((len(rows), *split.images.shape[1:]), dtype=np.uint8)
        images[order] = split.images[rows[order]]
        batch["images"] = torch.from_numpy(images)
    if with_text:
        picks = choose_notes(split, idx, rng)
        batch["text_mask"] = torch.from_numpy(picks >= 0)
        if split.note_features is not None:
            width = split.note_features[int(idx[0])].shape[1]  # (n_notes, H) even when n_notes is 0
            feats = np.zeros((len(idx), width), dtype=np.float32)
            for k, (i, p) in enumerate(zip(idx, picks)):
                if p >= 0:
                    feats[k] = split.note_features[i][p]
            batch["text_features"] = torch.from_numpy(feats)
        else:
            filler = list(cls_sep) if cls_sep else [pad_id]
            seqs = [split.notes[i][p] if p >= 0 else filler for i, p in zip(idx, picks)]
            batch["input_ids"], batch["attention_mask"] = pad_batch(seqs, pad_id)
    if pin:
        batch = {k: v.pin_memory() for k, v in batch.items()}
    return batch


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Copy a batch to `device` (non-blocking: pinned memory overlaps the copy with compute)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N,S,S,3) -> float (N,3,S,S) in [0, 1], channels_last memory format (fast convolutions)."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last)


def augment_draws(n: int, gen: torch.Generator, strength: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of `augment` for `n` images: flips (n, 3) bool and brightness/contrast scales (n, 2)."""
    flips = torch.rand(n, 3, generator=gen) < 0.5
    return flips, 1.0 + strength * (2.0 * torch.rand(n, 2, generator=gen) - 1.0)


def augment(x: torch.Tensor, gen: torch.Generator | None, strength: float = 0.1,
            draws: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Random dihedral transform (flips, transpose) and brightness/contrast jitter of +-`strength`, per image.

    The random draws come from the CPU generator `gen` (or are given: `augment_draws`, rows for these images);
    the arithmetic runs wherever `x` lives.
    """
    flips, scales = draws if draws is not None else augment_draws(x.shape[0], gen, strength)
    flips, scales = flips.to(x.device, non_blocking=True), scales.to(x.device, x.dtype, non_blocking=True)
    x = torch.where(flips[:, 0, None, None, None], x.flip(3), x)
    x = torch.where(flips[:, 1, None, None, None], x.flip(2), x)
    if x.shape[2] == x.shape[3]:
        x = torch.where(flips[:, 2, None, None, None], x.transpose(2, 3), x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * scales[:, 0, None, None, None] + mean * scales[:, 1, None, None, None]
    return x.clamp_(0.0, 1.0).contiguous(memory_format=torch.channels_last)


class Prefetcher:
    """Builds batches in `workers` background threads, at most `depth + workers` ahead, so the device never waits
    for the CPU side; yields them in job order (a batch's random draws come from its job, not from the thread)."""

    def __init__(self, jobs: list[Any], build: Any, depth: int = 2, workers: int = 1) -> None:
        self._jobs, self._build = list(jobs), build
        self._ahead, self._workers = depth + max(workers, 1), max(workers, 1)

    def __iter__(self) -> Iterator[Any]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self._workers, thread_name_prefix="dermlib-batches") as pool:
            pending = deque(pool.submit(self._build, job) for job in self._jobs[: self._ahead])
            queued = len(pending)
            try:
                while pending:
                    item = pending.popleft().result()  # an error in a build is raised here
                    if queued < len(self._jobs):
                        pending.append(pool.submit(self._build, self._jobs[queued]))
                        queued += 1
                    yield item
            finally:  # a loop left early: nothing more is built
                for future in pending:
                    future.cancel()
