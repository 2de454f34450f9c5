"""Training throughput, side by side in one process: a paper-style loop, dermlib's loop, and the bare model step.

    python benchmarks/bench_train.py                 # GPU: the paper profile's model at 224 px, batch 256
    python benchmarks/bench_train.py --cpu-small     # CPU: the demo model (EfficientNet-Lite0 + MiniLM-L6), 64 px

(a) paper-style: fp32, batch 4, each step decodes JPEGs (600x450, as HAM10000) and resizes them with
    torchvision transforms, tokenises each note padded to 512 tokens, DataLoader workers.
(b) dermlib: `dermlib.train`'s own epoch loop (`Trainer.train_epoch`, as `fit` runs it, with the GPU settings `fit`
    makes: cuDNN autotuning, TF32, bf16 autocast or fp16 + GradScaler, channels_last, fused Adam(amsgrad)) on a
    uint8 cache memory-mapped from disk, notes tokenised once and padded per batch, augmentation on the device,
    batches built by `train.num_workers` background threads with pinned memory. `--set KEY=VALUE` changes the
    profile's train settings as on any dermlib command line (e.g. train.compile=true, train.memory_efficient=true).
(c) bare step: `Trainer.step` (the same model, optimiser and loss) on one batch already on the device (the
    ceiling for (b)).
Prints samples/s and peak device memory for each and the ratio (b)/(c). What training part of the frozen demo
trunk (`train.trunk_adapter_rank`) costs per demo epoch on one thread: benchmarks/bench_trunk_adapter.py. Images and notes are synthetic (the
speed does not depend on their content). The paper shape is the paper profile's model as `fit` builds it
(`paper_model`: `build_model` from the profile's train settings: DenseNet121, PubMedBERT with its pooler, its last
layer trained) with random weights (same compute); without the Hugging Face hub, PubMedBERT's configuration is its
published dimensions and a WordPiece tokenizer is trained on the synthetic notes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dermlib.train.batches import Split, images_to_float, tokenize  # noqa: E402
from dermlib.config import get_config, parse_sets  # noqa: E402
from dermlib.data.labels import config_classes  # noqa: E402
from dermlib.train.model import PUBMEDBERT, MultimodalModel, build_model  # noqa: E402
from dermlib.train.settings import TrainSettings  # noqa: E402
from dermlib.train.device import amp_dtype  # noqa: E402
from dermlib.train.loop import Trainer  # noqa: E402

WORDS = ("lesion pigmented asymmetric border irregular regular colour light dark brown black blue gray red white "
         "network globules dots streaks veil regression vascular structures patient male female year old back "
         "chest arm leg face scalp diameter mm history changing itching bleeding dermoscopy shows reveals").split()


def synthetic_notes(n: int, rng: np.random.Generator, words: tuple[int, int] = (60, 140)) -> list[str]:
    """Notes of realistic length (60-140 words, roughly 80-180 tokens) from a small clinical vocabulary."""
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(*words)))) + "." for _ in range(n)]


def synthetic_images(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [n, size, size, 3]: smooth random colour fields (blocky noise upsampled), cheap to make at any n."""
    cells = max(size // 16, 1)
    low = rng.integers(40, 230, size=(n, cells, cells, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(low, -(-size // cells), axis=1), -(-size // cells), axis=2)[:, :size, :size]
    return np.ascontiguousarray(big)


def paper_tokenizer(notes: list[str]):
    """PubMedBERT's tokenizer from the hub, else a WordPiece tokenizer trained on `notes` (same kind, offline)."""
    from transformers import AutoTokenizer, BertTokenizerFast

    try:
        return AutoTokenizer.from_pretrained(PUBMEDBERT), "pubmedbert"
    except Exception:
        from tokenizers import BertWordPieceTokenizer

        wp = BertWordPieceTokenizer(lowercase=True)
        wp.train_from_iterator(notes, vocab_size=2000, min_frequency=1)
        with tempfile.TemporaryDirectory() as tmp:
            wp.save_model(tmp)
            return BertTokenizerFast(vocab_file=str(Path(tmp) / "vocab.txt"), do_lower_case=True), "wordpiece-local"


def pubmedbert_config() -> tuple[Any, str]:
    """PubMedBERT's configuration from the hub (or its cache), else BERT-base with its published dimensions."""
    from transformers import AutoConfig, BertConfig

    try:
        return AutoConfig.from_pretrained(PUBMEDBERT), "pubmedbert-config"
    except Exception:
        return BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                          intermediate_size=3072, max_position_embeddings=512), "bertconfig-pubmedbert-dims"


def paper_model(cfg: dict, tokenizer, text_config: Any = None) -> tuple[MultimodalModel, str]:
    """The model of `cfg` (the paper profile) as `fit` builds it (`build_model` from its train settings), with
    random weights (speed only): the text encoder from `text_config` (default `pubmedbert_config()`)."""
    source = "given config"
    if text_config is None:
        text_config, source = pubmedbert_config()
    settings = TrainSettings.from_config(cfg).replace(pretrained=False)
    with tempfile.TemporaryDirectory() as tmp:  # what a run's text_encoder/ folder holds
        text_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        return build_model(settings, len(config_classes(cfg)), pretrained=False, text_dir=tmp), source


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


class PaperStyleData(torch.utils.data.Dataset):
    """What a typical research script does per item: open and decode a JPEG, resize, flip, tokenise to 512."""

    def __init__(self, paths: list[Path], notes: list[str], labels: np.ndarray, tokenizer, size: int) -> None:
        from torchvision import transforms

        self.paths, self.notes, self.labels, self.tokenizer = paths, notes, labels, tokenizer
        self.transform = transforms.Compose([transforms.Resize((size, size)), transforms.RandomHorizontalFlip(),
                                             transforms.RandomVerticalFlip(), transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        image = self.transform(Image.open(self.paths[i]).convert("RGB"))
        tok = self.tokenizer(self.notes[i], padding="max_length", max_length=512, truncation=True, return_tensors="pt")
        return image, tok["input_ids"][0], tok["attention_mask"][0], int(self.labels[i])


def bench_paper_style(model, data, device, steps: int, workers: int) -> dict:
    """(a) fp32, batch 4, per-step decode + pad-to-512; samples/s over `steps` steps after 3 warm-up steps."""
    from dermlib.train.losses import MultimodalLoss

    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True, num_workers=workers, drop_last=True,
                                         pin_memory=device.type == "cuda", persistent_workers=False)
    model.to(device, memory_format=torch.contiguous_format).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-4)
    loss_fn = MultimodalLoss(temperature=0.07)
    reset_peak(device)
    done, start = 0, None
    for step, (img, ids, mask, y) in enumerate(loader):
        if step == 3:
            sync(device)
            start = time.perf_counter()
        out = model(img.to(device), ids.to(device), mask.to(device))
        total, _ = loss_fn(out, y.to(device))
        opt.zero_grad()
        total.backward()
        opt.step()
        if step >= 3:
            done += len(y)
        if step >= steps + 2:
            break
    sync(device)
    return {"samples_per_s": done / (time.perf_counter() - start), "batch": 4, "precision": "fp32",
            "peak_gib": peak_gib(device)}


def bench_dermlib(cfg: dict, model, split: Split, device) -> tuple[dict, Trainer]:
    """(b) dermlib's epoch loop: one warm-up epoch, then one measured epoch (samples/s from the loop itself)."""
    trainer = Trainer(cfg, model=model, splits={"train": split, "val": split})
    trainer.train_epoch(1)
    reset_peak(device)
    row = trainer.train_epoch(2)
    return {"samples_per_s": row["samples_per_s"], "batch": cfg["train"]["batch_size"],
            "precision": str(amp_dtype(device) or "fp32").replace("torch.", ""), "peak_gib": peak_gib(device)}, trainer


def bench_bare(trainer: Trainer, split: Split, steps: int) -> dict:
    """(c) the same model/optimiser/loss stepping on one batch already on the device (no data pipeline)."""
    idx = np.arange(trainer.t.batch_size) % len(split)
    batch = trainer.device_batch(split, idx)
    x = images_to_float(batch["images"]) if "images" in batch else None  # a frozen trunk: cached features
    trainer.model.train()

    def step() -> None:
        trainer.step(batch, x)

    for _ in range(3):
        step()
    reset_peak(trainer.device)
    sync(trainer.device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(trainer.device)
    return {"samples_per_s": steps * len(idx) / (time.perf_counter() - start), "batch": len(idx),
            "text_len": int(batch["input_ids"].shape[1]) if "input_ids" in batch else "precomputed (frozen encoder)",
            "peak_gib": peak_gib(trainer.device)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-small", action="store_true", help="the demo model on CPU, about a minute")
    parser.add_argument("--samples", type=int, default=None, help="samples in the cache (an epoch of (b))")
    parser.add_argument("--paper-steps", type=int, default=None, help="measured steps of the paper-style loop")
    parser.add_argument("--bare-steps", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers of the paper-style loop")
    parser.add_argument("--batch", type=int, default=None, help="batch of (b)/(c) (default 256; 32 with --cpu-small)")
    parser.add_argument("--image-size", type=int, default=None, help="default 224 (64 with --cpu-small)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a train setting of the profile, as on dermlib's command lines (e.g. train.compile=true)")
    args = parser.parse_args(argv)
    device = torch.device("cpu") if args.cpu_small else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sets = parse_sets(args.set)  # the GPU settings (cuDNN autotuning, TF32) are the ones fit makes (Trainer)
    rng = np.random.default_rng(0)
    small = args.cpu_small
    size, batch = (64, 32) if small else (224, 256)
    size, batch = args.image_size or size, args.batch or batch
    n = args.samples or (256 if small else 256 * 24)
    notes = synthetic_notes(n, rng)
    labels = rng.integers(0, 8, size=n)
    if small:
        cfg_overrides = {**sets, "train.batch_size": batch, "train.strategy": "M", "train.device": str(device)}
        cfg = get_config("demo", cfg_overrides)
        model = build_model(TrainSettings.from_config(cfg), 8)
        tokenizer, text_source = model.text_encoder.tokenizer, "minilm-l6"
        make_paper = lambda: build_model(TrainSettings.from_config(cfg), 8)  # noqa: E731
    else:
        cfg = get_config("paper", {**sets, "train.batch_size": batch, "train.strategy": "M",
                                   "train.device": str(device)})
        tokenizer, tok_source = paper_tokenizer(notes)
        model, text_source = paper_model(cfg, tokenizer)
        text_source = f"{text_source}, tokenizer {tok_source}"
        make_paper = lambda: paper_model(cfg, tokenizer)[0]  # noqa: E731
    results: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "torch": torch.__version__, "threads": torch.get_num_threads(), "image_size": size,
                     "image_encoder": cfg["train"]["image_encoder"], "text_encoder": text_source, "samples": n,
                     "profile": "demo" if small else "paper", "train_settings": {k: cfg["train"][k] for k in (
                         "pooling", "train_last_n_text_layers", "freeze_image_encoder", "optimizer", "compile",
                         "memory_efficient", "num_workers", "max_text_len")},
                     "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    with tempfile.TemporaryDirectory() as tmp:
        images = synthetic_images(n, size, rng)
        np.save(Path(tmp) / "images.npy", images)
        del images
        cache = np.load(Path(tmp) / "images.npy", mmap_mode="r")  # as dermlib.data.preprocess.load_cache gives it
        tokens = tokenize(tokenizer, notes, cfg["train"]["max_text_len"])
        split = Split([str(i) for i in range(n)], cache, np.arange(n), labels.astype(np.int64), [[t] for t in tokens])
        print(f"== (b) dermlib loop: batch {batch}, {n} samples per epoch", flush=True)
        results["dermlib"], trainer = bench_dermlib(cfg, model, split, device)
        print("== (c) bare step", flush=True)
        results["bare_step"] = bench_bare(trainer, split, args.bare_steps or (5 if small else 20))
        del trainer, model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        paper_steps = args.paper_steps or (5 if small else 100)
        n_jpeg = 4 * (paper_steps + 4)  # warm-up steps, measured steps and slack
        from PIL import Image

        paths = []
        for i in range(n_jpeg):
            path = Path(tmp) / f"img_{i:05d}.jpg"
            Image.fromarray(np.asarray(cache[i % n])).resize((600, 450), Image.BILINEAR).save(path, quality=92)
            paths.append(path)
        workers = args.workers if args.workers is not None else (0 if small else min(8, os.cpu_count() or 1))
        print(f"== (a) paper-style loop: {paper_steps} steps of batch 4, {workers} workers", flush=True)
        data = PaperStyleData(paths, [notes[i % n] for i in range(n_jpeg)], labels[np.arange(n_jpeg) % n],
                              tokenizer, size)
        torch.manual_seed(0)
        results["paper_style"] = bench_paper_style(make_paper(), data, device, paper_steps, workers)
    results["pipeline_over_bare"] = results["dermlib"]["samples_per_s"] / results["bare_step"]["samples_per_s"]
    results["dermlib_over_paper_style"] = results["dermlib"]["samples_per_s"] / results["paper_style"]["samples_per_s"]
    print(json.dumps(results, indent=2, default=str))
    print(f"\nsamples/s on {results['device']}: paper-style {results['paper_style']['samples_per_s']:.1f} | "
          f"dermlib {results['dermlib']['samples_per_s']:.1f} | bare step {results['bare_step']['samples_per_s']:.1f}"
          f" | pipeline/bare {results['pipeline_over_bare']:.1%} | dermlib/paper-style "
          f"{results['dermlib_over_paper_style']:.1f}x")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
