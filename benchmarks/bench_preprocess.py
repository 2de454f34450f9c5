"""Preprocessing throughput: images/s of `dermlib.data.build_cache` at 224 px against `data.workers`.

    python benchmarks/bench_preprocess.py --n 200 --workers 1 2 4 --json benchmarks/results/preprocess.json

Realistic originals are written once to a temporary folder: clinical photos (1024x768 JPEG, cropped to an annotated
box) and dermoscopy (600x450 JPEG with a dark circular vignette, cropped to the field of view by Otsu), half each.
Every setting builds a fresh cache (`force=True`). Run it on an idle machine: timings of a busy one mean little.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from dermlib.data import build_cache, to_manifest
from dermlib.data.schema import dump_attributes


def make_originals(folder: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """n/2 clinical 1024x768 photos with a box, n/2 dermoscopic 600x450 images with a dark vignette."""
    rng = np.random.default_rng(seed)
    rows = []
    yy, xx = np.mgrid[0:450, 0:600]
    disc = ((yy - 225) ** 2 + (xx - 300) ** 2) < 210 ** 2
    for i in range(n):
        if i % 2:
            pixels = rng.normal([200, 150, 130], 20, (768, 1024, 3)).clip(0, 255).astype(np.uint8)
            pixels[300:500, 400:650] = (90, 60, 40)
            attrs, modality = {"bbox": [350, 250, 700, 550]}, "clinical"
        else:
            pixels = rng.normal([190, 140, 120], 15, (450, 600, 3)).clip(0, 255).astype(np.uint8)
            pixels[~disc] = rng.integers(0, 20, (int((~disc).sum()), 3))
            attrs, modality = {}, "dermoscopic"
        path = folder / f"img_{i:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        rows.append({"sample_id": f"bench/img_{i:05d}", "source": "bench", "image_path": str(path),
                     "modality": modality, "label_raw": "nevus", "label": "NV", "attributes": dump_attributes(attrs)})
    return to_manifest(pd.DataFrame(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_originals(Path(tmp), args.n)
        for workers in args.workers:
            start = time.perf_counter()
            build_cache(manifest, Path(tmp) / f"cache{workers}", size=args.size, workers=workers, force=True)
            seconds = time.perf_counter() - start
            rows.append({"workers": workers, "images": args.n, "seconds": round(seconds, 2),
                         "images_per_s": round(args.n / seconds, 1), "cpus": os.cpu_count()})
            print(rows[-1], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
