"""Time of the paper's per-source protocol (`dermlib.evaluate.protocol.protocol_rows`) at the demo's scale or larger.

    python benchmarks/bench_protocol.py --images 1000 --sources 12 --seeds 10 --boot 10000

Random per-image values (the speed does not depend on them): `--images` test images split evenly over `--sources`
sources, half of them internal; Img, the four note strategies and the controls D and M+G, each over `--seeds`
seeds; 5 % of notes missing. Runs PAPER_PROTOCOL (every row, with Holm and TOST) and prints rows and seconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from dermlib.config import EQUIVALENCE_MARGINS, PAPER_PROTOCOL
from dermlib.evaluate import protocol

PER_PAIR = ["ap_i2t_source", "ap_t2i_source", "cosine", "cosine_lift_source", "ap_i2t_source_at_k",
            "ap_t2i_source_at_k"]
STRATEGIES = ["Img", "M", "M+P1", "M+P2", "P3", "D", "M+G"]


def samples(n_images: int, n_sources: int, n_seeds: int, n_classes: int = 8, seed: int = 0) -> pd.DataFrame:
    """A samples table with the columns `protocol_rows` reads; two images per lesion."""
    rng = np.random.default_rng(seed)
    source = np.repeat([f"s{i:02d}" for i in range(n_sources)], n_images // n_sources)
    n, runs = len(source), len(STRATEGIES) * n_seeds
    partition = np.where(np.searchsorted(np.unique(source), source) < n_sources // 2, "internal", "external")
    y = rng.integers(0, n_classes, n)
    frame = pd.DataFrame({"strategy": np.repeat(STRATEGIES, n_seeds * n),
                          "seed": np.tile(np.repeat(np.arange(n_seeds), n), len(STRATEGIES)),
                          "partition": np.tile(partition, runs), "source": np.tile(source, runs),
                          "sample_id": np.tile([f"i{i:06d}" for i in range(n)], runs),
                          "cluster": np.tile([f"l{i // 2}" for i in range(n)], runs), "y": np.tile(y, runs),
                          "pred": np.where(rng.random(runs * n) < 0.5, np.tile(y, runs),
                                           rng.integers(0, n_classes, runs * n))})
    for column in PER_PAIR:
        values = rng.random(runs * n)
        values[(frame["strategy"] == "Img").to_numpy() | (rng.random(runs * n) < 0.05)] = np.nan
        frame[column] = values
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--sources", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--boot", type=int, default=10_000)
    args = parser.parse_args()
    table = samples(args.images, args.sources, args.seeds)
    start = time.perf_counter()
    rows = protocol.protocol_rows(table, PAPER_PROTOCOL, n_boot=args.boot,
                                  margins=EQUIVALENCE_MARGINS)
    print(f"{len(rows)} comparisons, {args.images} images x {args.sources} sources x {args.seeds} seeds x "
          f"{len(STRATEGIES)} strategies, B = {args.boot}: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
