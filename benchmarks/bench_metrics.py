"""Time the retrieval metrics on a paper-sized pool: `python benchmarks/bench_metrics.py [--n 30000]`.

Prints the wall time and peak memory of class-level mAP (one direction), Recall@1/5/10 and paired cosine.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from dermlib import metrics
from dermlib.data.labels import ISIC8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=30_000, help="pool size (queries = gallery items)")
    parser.add_argument("--dim", type=int, default=128)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    labels = rng.choice(ISIC8, size=args.n)
    centres = rng.normal(size=(len(ISIC8), args.dim))
    image = centres[[ISIC8.index(c) for c in labels]] + rng.normal(scale=2.0, size=(args.n, args.dim))
    text = image + rng.normal(scale=4.0, size=(args.n, args.dim))
    timings = {}
    start = time.perf_counter()
    value = metrics.retrieval_map(image, labels, text, labels)
    timings[f"retrieval_map (mAP={value:.3f})"] = time.perf_counter() - start
    start = time.perf_counter()
    recalls = [metrics.recall_at_k(image, text, k) for k in (1, 5, 10)]
    timings[f"recall_at_k x3 (R@1={recalls[0]:.3f})"] = time.perf_counter() - start
    start = time.perf_counter()
    metrics.paired_cosine(image, text)
    timings["paired_cosine"] = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pool {args.n} x {args.n}, dim {args.dim}, chunk {metrics.CHUNK_ELEMENTS} entries")
    for name, seconds in timings.items():
        print(f"  {name:<38s} {seconds:8.2f} s")
    print(f"  peak resident memory {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
