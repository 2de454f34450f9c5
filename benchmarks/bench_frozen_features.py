"""Frozen-encoder throughput on the CPU: what batch size and memory layout `dermlib.train.features` should use.

    python benchmarks/bench_frozen_features.py --json benchmarks/results/frozen_features.json

The demo computes every frozen feature once per image (EfficientNet-Lite0 at the demo's image size, 4 views of
each training image) and once per note (MiniLM-L6, mean pooling), so these passes are most of notebooks 03 and 04.
Images are random pixels (the speed does not depend on their content); notes are the demo's own M+P2 notes when
`work/demo/notes/notes.parquet` exists (run the demo first), else invented texts of the same token length.
Prints images/s and notes/s per setting, each the best of `--repeats`. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dermlib.config import REPO_ROOT, get_config
from dermlib.train.model import ImageEncoder, TextEncoder
from dermlib.train.batches import pad_batch, tokenize


def best_rate(n: int, run, repeats: int) -> float:
    """Items per second of the fastest of `repeats` calls of `run()`."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return n / best


def image_rows(size: int, n: int, repeats: int) -> list[dict]:
    encoder = ImageEncoder("efficientnet_lite0", pretrained=True).eval()
    x = torch.rand(n, 3, size, size)
    rows = []
    for layout in ("contiguous", "channels_last"):
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        encoder.to(memory_format=fmt)
        for batch in (128, 32, 16, 8):
            def run() -> None:
                with torch.inference_mode():
                    for start in range(0, n, batch):
                        encoder(x[start: start + batch].contiguous(memory_format=fmt))
            rows.append({"encoder": "efficientnet_lite0", "image_size": size, "layout": layout, "batch": batch,
                         "items_per_s": round(best_rate(n, run, repeats), 1)})
            print(rows[-1], flush=True)
    return rows


def note_texts(n: int) -> tuple[list[str], str]:
    path = REPO_ROOT / "work" / "demo" / "notes" / "notes.parquet"
    if path.exists():
        import pandas as pd

        notes = pd.read_parquet(path)
        texts = notes[(notes["strategy"] == "M+P2") & (notes["status"] == "ok")]["note"].astype(str).tolist()
        return texts[:n], "demo M+P2 notes"
    words = "asymmetric pigmented lesion with irregular border blue white veil dots globules streaks".split()
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=110)) for _ in range(n)], "invented texts"


def text_rows(max_len: int, n: int, repeats: int) -> list[dict]:
    encoder = TextEncoder("minilm-l6", "mean", 0).eval()
    texts, source = note_texts(n)
    ids = tokenize(encoder.tokenizer, texts, max_len)
    order = np.argsort([len(t) for t in ids], kind="stable")  # as dermlib.train.features: similar lengths together
    pad = int(encoder.tokenizer.pad_token_id)
    rows = []
    for batch in (128, 32, 16, 8):
        def run() -> None:
            with torch.inference_mode():
                for start in range(0, len(order), batch):
                    encoder(*pad_batch([ids[i] for i in order[start: start + batch]], pad))
        mean_tokens = round(float(np.mean([len(t) for t in ids])), 1)
        rows.append({"encoder": "minilm-l6", "notes": source, "mean_tokens": mean_tokens,
                     "batch": batch, "items_per_s": round(best_rate(len(ids), run, repeats), 1)})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--notes", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the demo machine has 2 cores)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = get_config("demo")
    rows = image_rows(int(cfg["data"]["image_size"]), args.images, args.repeats)
    rows += text_rows(int(cfg["train"]["max_text_len"]), args.notes, args.repeats)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
