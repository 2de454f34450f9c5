"""What training part of the frozen demo trunk costs: one demo-shaped epoch per variant, on one CPU thread.

    python benchmarks/bench_trunk_adapter.py            # writes benchmarks/results/trunk_adapter.json

The demo trains two runs at once, one thread each, so one thread is what a run gets. Each variant runs
`Trainer.train_epoch` and `Trainer.evaluate` (what `fit` runs per epoch) on the demo's shapes: batch 64, 860
training images with 4 cached views, 141 validation images, 128 px images whose last EfficientNet-Lite0 block is
4 x 4 (P = 16 positions), one 384-d MiniLM feature per note. Cached values are random (the cost does not depend on
them); the models are the real ones (`build_model`). Variants:

- `heads`: `train.trunk_adapter_rank` = 0, today's demo: pooled features cached, only the heads train.
- `lora-rR`: a rank-R adapter on conv_head + the affine of its batch norm, from cached maps (`dermlib.train.trunk`).
- `lora-r8-autograd`: the same head in plain autograd ops, the cost the hand-written backward avoids.
- `conv_head`: the whole conv_head (320 x 1280) + batch-norm affine fine-tuned from the cached block output.

Trainers of every variant are built first and their epochs interleaved (round robin), so a change in the machine's
load hits every variant alike; each number is the median over the measured epochs of the thread's CPU time
(`time.thread_time`, which time spent waiting for a core does not inflate) and of the wall time. The projection
multiplies the extra seconds per epoch by the epochs runs took in the committed demo (notebook 03: Img 11.5, text
strategies 15.5 on average; 40 at most) over the 70 runs the demo will train, two at a time; `calibrated` scales it
by the committed demo's heads-only epoch over the one measured here (the machine's load at the time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dermlib.config import get_config  # noqa: E402
from dermlib.train.batches import Split  # noqa: E402
from dermlib.train.loop import Trainer  # noqa: E402
from dermlib.train.model import build_model  # noqa: E402
from dermlib.train.settings import TrainSettings  # noqa: E402
from dermlib.train.trunk import RELU6_MAX  # noqa: E402

C_IN, C_OUT, TEXT_DIM = 320, 1280, 384
DEMO_EPOCHS = {"Img": 11.5, "M": 15.5}  # mean epochs run per strategy kind in the committed demo (notebook 03)
# the committed demo's heads-only training epoch (notebook 03: 832 samples at 12,657 and 7,324 samples/s, two runs at
# once on the idle 2-core machine): what this machine's heads-only epoch is compared with when it is busier
DEMO_HEADS_TRAIN_EPOCH_S = {"Img": 832 / 12_657, "M": 832 / 7_324}
DEMO_RUNS = {"Img": 10, "M": 60}  # the demo after the control strategies: 7 strategies x 10 seeds, 1 of them Img
PARALLEL = 2


class AutogradHead(nn.Module):
    """The adapted head in plain autograd ops (F.batch_norm in eval mode, hardtanh, mean); `full`: the whole
    conv_head W trains instead of a low-rank B·A (the cached W·x is then not used)."""

    def __init__(self, adapter: nn.Module, conv_weight: torch.Tensor, full: bool) -> None:
        super().__init__()
        self.full = full
        if full:
            self.W = nn.Parameter(conv_weight.detach().reshape(C_OUT, C_IN).clone())
        else:
            self.A, self.B = nn.Parameter(adapter.A.detach().clone()), nn.Parameter(adapter.B.detach().clone())
        self.bn_weight = nn.Parameter(adapter.bn_weight.detach().clone())
        self.bn_bias = nn.Parameter(adapter.bn_bias.detach().clone())

    def forward(self, maps: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
        x = maps[..., :C_IN].float()
        h = x @ self.W.T if self.full else maps[..., C_IN:].float() + x @ self.A.T @ self.B.T
        z = F.batch_norm(h.reshape(-1, C_OUT), bn.running_mean, bn.running_var, self.bn_weight, self.bn_bias,
                         False, 0.0, bn.eps)
        return F.hardtanh(z, 0.0, RELU6_MAX).view(h.shape).mean(1)


def make_split(n: int, views: int, positions: int, maps: bool, rng: np.random.Generator) -> Split:
    """A split of `n` samples with cached trunk output (maps (V, n, P, 1600) float16 or pooled (V, n, 1280)
    float32), one 384-d note feature each and 6 sources."""
    feats = (rng.standard_normal((views, n, positions, C_IN + C_OUT), dtype=np.float32).astype(np.float16) if maps
             else rng.standard_normal((views, n, C_OUT), dtype=np.float32))
    notes = [rng.standard_normal((1, TEXT_DIM), dtype=np.float32) for _ in range(n)]
    return Split([str(i) for i in range(n)], np.zeros((1, 8, 8, 3), np.uint8), np.zeros(n, np.int64),
                 rng.integers(0, 8, n).astype(np.int64), [[[101, 102]] for _ in range(n)], note_features=notes,
                 image_features=feats, sources=rng.integers(0, 6, n).astype(str))


def build(variant: str, strategy: str, args: argparse.Namespace, work: str,
          splits: dict[bool, dict[str, Split]]) -> Trainer:
    """A Trainer of the demo config for one variant and strategy, on the synthetic cached splits (maps or pooled)."""
    rank = 0 if variant == "heads" else 1 if variant in ("conv_head",) else int(variant.split("-r")[1].split("-")[0])
    cfg = get_config("demo", {"train.trunk_adapter_rank": rank, "train.strategy": strategy, "work_dir": work,
                              "train.batch_size": args.batch})
    torch.manual_seed(0)
    model = build_model(TrainSettings.from_config(cfg), 8)
    if variant == "conv_head" or variant.endswith("-autograd"):
        enc = model.image_encoder
        enc.adapter = AutogradHead(enc.adapter, enc.trunk._conv_head.weight, full=variant == "conv_head")
    return Trainer(cfg, model=model, splits=splits[rank > 0])


def trainable(trainer: Trainer) -> dict[str, int]:
    """Trainable parameters in the image trunk part and in the rest of the model."""
    trunk = sum(p.numel() for p in trainer.model.image_encoder.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {"trunk_params": trunk, "head_params": total - trunk}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--epochs", type=int, default=5, help="measured epochs per variant (after one warm-up)")
    parser.add_argument("--train", type=int, default=860)
    parser.add_argument("--val", type=int, default=141)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--positions", type=int, default=16, help="4 x 4 maps: 128 px images")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--no-full", action="store_true", help="leave out the conv_head fine-tuning variant")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "trunk_adapter.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    variants = ["heads", *[f"lora-r{r}" for r in args.ranks], "lora-r8-autograd"] + ([] if args.no_full else ["conv_head"])
    times: dict[tuple[str, str], dict[str, list[float]]] = {}
    load_before = os.getloadavg()[0]  # the demo machine is shared: what else ran is part of the numbers
    with tempfile.TemporaryDirectory() as work:
        rng = np.random.default_rng(0)
        splits = {maps: {"train": make_split(args.train, args.views, args.positions, maps, rng),
                         "val": make_split(args.val, 1, args.positions, maps, rng)} for maps in (False, True)}
        trainers = {(v, s): build(v, s, args, work, splits) for v in variants for s in ("Img", "M")}
        for trainer in trainers.values():  # warm-up epoch
            trainer.train_epoch(1)
            trainer.evaluate()
        for epoch in range(2, args.epochs + 2):
            for key, trainer in trainers.items():
                record = times.setdefault(key, {"train_cpu": [], "train_wall": [], "eval_cpu": [], "eval_wall": []})
                c0, w0 = time.thread_time(), time.perf_counter()
                trainer.train_epoch(epoch)
                c1, w1 = time.thread_time(), time.perf_counter()
                trainer.evaluate()
                c2, w2 = time.thread_time(), time.perf_counter()
                record["train_cpu"].append(c1 - c0)
                record["train_wall"].append(w1 - w0)
                record["eval_cpu"].append(c2 - c1)
                record["eval_wall"].append(w2 - w1)
            print(f"epoch {epoch - 1}/{args.epochs} measured", flush=True)
    rows: list[dict[str, Any]] = []
    for (variant, strategy), record in times.items():
        med = {k: statistics.median(v) for k, v in record.items()}
        rows.append({"variant": variant, "strategy": strategy, **trainable(trainers[(variant, strategy)]),
                     "epoch_cpu_s": round(med["train_cpu"] + med["eval_cpu"], 4),
                     "epoch_wall_s": round(med["train_wall"] + med["eval_wall"], 4),
                     **{f"{k}_s": round(v, 4) for k, v in med.items()}})
    base = {r["strategy"]: r["epoch_cpu_s"] for r in rows if r["variant"] == "heads"}
    slower = {r["strategy"]: r["train_cpu_s"] / DEMO_HEADS_TRAIN_EPOCH_S[r["strategy"]] for r in rows
              if r["variant"] == "heads"}  # how much slower than the committed demo this machine ran
    projection = {}
    for variant in variants:
        extra = {r["strategy"]: r["epoch_cpu_s"] - base[r["strategy"]] for r in rows if r["variant"] == variant}
        typical = sum(DEMO_RUNS[s] * DEMO_EPOCHS[s] * extra[s] for s in extra) / PARALLEL
        worst = sum(DEMO_RUNS[s] * 40 * extra[s] for s in extra) / PARALLEL
        calibrated = sum(DEMO_RUNS[s] * DEMO_EPOCHS[s] * extra[s] / slower[s] for s in extra) / PARALLEL
        projection[variant] = {"extra_demo_s_typical_epochs": round(typical, 1), "extra_demo_s_40_epochs": round(worst, 1),
                               "extra_demo_s_typical_epochs_calibrated": round(calibrated, 1)}
    result = {"threads": torch.get_num_threads(), "torch": torch.__version__, "cpus": os.cpu_count(),
              "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "batch": args.batch,
              "n_train": args.train, "n_val": args.val, "views": args.views, "positions": args.positions,
              "measured_epochs": args.epochs, "timer": "median over epochs; cpu = time.thread_time of the one thread",
              "demo_epochs_assumed": DEMO_EPOCHS, "demo_runs_assumed": DEMO_RUNS, "parallel_runs": PARALLEL,
              "committed_demo_heads_train_epoch_s": DEMO_HEADS_TRAIN_EPOCH_S,
              "heads_train_epoch_here_over_committed_demo": {k: round(v, 2) for k, v in slower.items()},
              "rows": rows, "projected_extra_demo_training_s": projection}
    print(f"\n{'variant':18s} {'strategy':8s} {'trunk params':>12s} {'epoch cpu s':>11s} {'wall s':>7s} "
          f"{'train cpu':>9s} {'eval cpu':>8s}")
    for r in rows:
        print(f"{r['variant']:18s} {r['strategy']:8s} {r['trunk_params']:12d} {r['epoch_cpu_s']:11.3f} "
              f"{r['epoch_wall_s']:7.3f} {r['train_cpu_s']:9.3f} {r['eval_cpu_s']:8.3f}")
    print(f"\nprojected extra demo training time (70 runs, 2 at a time), s; this machine ran the heads-only epoch "
          f"{', '.join(f'{k} {v:.1f}x' for k, v in slower.items())} slower than the committed demo:")
    for variant, p in projection.items():
        print(f"  {variant:18s} typical epochs {p['extra_demo_s_typical_epochs']:7.1f} | 40 epochs "
              f"{p['extra_demo_s_40_epochs']:7.1f} | typical, calibrated {p['extra_demo_s_typical_epochs_calibrated']:7.1f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
