"""One training run (`fit`): its folder, its checkpoints, resuming, early stopping and its summary; a grid of runs is
`dermlib.train.grid`, the loop's pieces (`Trainer`, `make_optimizer`) are `dermlib.train.loop`, and loading a
finished run back is `dermlib.train.inference`.

A run lives in `<work_dir>/runs/<strategy>-seed<k>-<hash8>/` where the hash covers the data and train settings
and what the run reads (the image cache's content, the notes it trains on: `config_hash`): `config.json` (resolved), `checkpoint.pt` (last and best weights, optimiser, history), `history.csv`,
`text_encoder/` (tokenizer + encoder config, so a run loads offline) and a `done` marker. config.json's "resolved"
section says what actually ran: device, where the image and text weights came from (or "random") and the text
encoder's missing/unexpected keys. A finished run with the same hash is reused; an interrupted one resumes from
its last checkpoint to the same result on a CPU (every random draw is seeded by (seed, epoch)). The GPU settings
are `dermlib.train.loop`'s. Multi-GPU: `torchrun --nproc_per_node K -m dermlib.train ...` (DDP, NT-Xent over the
global batch). Each epoch logs one line (logger "dermlib.train", rank 0: a CLI's stderr, the pipeline's log file);
with `train.tensorboard` (on in the paper profile), `<run_dir>/tensorboard/` gets every loss term, validation
metric and the learning rate per epoch; a terminal or a notebook with widgets shows one progress bar per run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from dermlib.atomic import atomic_path, write_csv, write_text
from dermlib.config import add_cli_arguments, config_from_cli
from dermlib.grammar import IMG, parse_strategy, strategy_label
from dermlib.logs import log_to_stderr
from dermlib.notes.store import notes_digest
from dermlib.progress import progress
from dermlib.train.features import FEATURE_VERSION, cache_fingerprint
from dermlib.train.loop import Trainer, load_trainable, read_checkpoint, selection_score, trainable_state
from dermlib.train.settings import NEUTRAL_TRAIN_KEYS, UNHASHED_TRAIN_KEYS
from dermlib.workdir import WorkDir

if TYPE_CHECKING:  # pandas is imported where it is used
    import pandas as pd

HASHED_SECTIONS = ("data", "train")
# data settings that change where or how fast, not what: the image cache's content stands for the images
UNHASHED_DATA_KEYS = ("workers", "roots")
log = logging.getLogger("dermlib.train")


def config_hash(cfg: dict[str, Any]) -> str:
    """8 hex digits identifying what a run computes: its data and train settings (not paths, worker counts or
    device; a later key at its neutral value, `NEUTRAL_TRAIN_KEYS`, is left out), FEATURE_VERSION, and what it
    reads (`run_inputs`: the image cache's content and the notes it trains on). Notes settings are not in it:
    the notes themselves are, so a changed note retrains exactly the runs that read it, and a changed port,
    timeout or concurrency retrains nothing."""
    key: dict[str, Any] = {s: cfg.get(s) for s in HASHED_SECTIONS}
    key["data"] = {k: v for k, v in cfg["data"].items() if k not in UNHASHED_DATA_KEYS}
    key["train"] = {k: v for k, v in cfg["train"].items()
                    if k not in UNHASHED_TRAIN_KEYS and not (k in NEUTRAL_TRAIN_KEYS and v == NEUTRAL_TRAIN_KEYS[k])}
    key["feature_version"] = FEATURE_VERSION  # how frozen encoders' features are made decides what a run learns
    key["inputs"] = run_inputs(cfg)
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]


def run_inputs(cfg: dict[str, Any]) -> dict[str, str]:
    """What a run reads from its work dir, as digests: "images" (the preprocessed cache's content fingerprint) and
    one "notes:<strategy>" per note strategy it trains on (its usable notes; "absent" before notebook 02)."""
    work = WorkDir.of(cfg)
    inputs = {"images": cache_fingerprint(work.cache)}
    strategy = cfg["train"]["strategy"]
    if strategy != IMG:
        inputs.update({f"notes:{s}": notes_digest(work.notes, s) for s in parse_strategy(strategy)})
    return inputs


def run_dir(cfg: dict[str, Any]) -> Path:
    """`<work_dir>/runs/<strategy>-seed<k>-<hash8>` for this config (strategy "M,P3" is written "M_P3")."""
    t = cfg["train"]
    return WorkDir.of(cfg).runs / f"{strategy_label(t['strategy'])}-seed{t['seed']}-{config_hash(cfg)}"


def _atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file of its own, then rename (`dermlib.atomic`): a crash never leaves a half-written
    checkpoint, and two processes saving the same run never write into one temporary file."""

    with atomic_path(path) as tmp, open(tmp, "wb") as file:  # a file object: the bytes never hold the random name
        torch.save(obj, file)


def _write_history(rows: list[dict[str, Any]], path: Path) -> None:
    """history.csv: one row per epoch (epoch, train losses per term, samples/s, val kappa/loss/accuracy, seconds)."""
    import pandas as pd

    write_csv(pd.DataFrame(rows), path, index=False)


def _setup_distributed() -> bool:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU); True if this call made it."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return True
    return False


def fit(config: dict[str, Any], on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Train the model `config` (a full profile from get_config) describes; return its run folder.

    `on_epoch_end(row)` is called after each epoch's checkpoint is written (a notebook's progress line; raising in
    it interrupts the run, which the next `fit` resumes).
    """
    made_group = _setup_distributed()
    try:
        return _fit(config, on_epoch_end)
    finally:
        if made_group:
            dist.destroy_process_group()


def _fit(cfg: dict[str, Any], on_epoch_end: Callable[[dict[str, Any]], None] | None) -> Path:
    folder = run_dir(cfg)
    if (folder / "done").exists():
        return folder
    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    trainer = Trainer(cfg)
    t = trainer.t
    state = {"epoch": 0, "history": [], "best_score": -np.inf, "best_epoch": 0, "best_model": None}
    ckpt = folder / "checkpoint.pt"  # written by _epochs after every epoch
    if ckpt.exists():
        saved = read_checkpoint(ckpt)
        load_trainable(trainer.model, saved["model"])
        trainer.optimizer.load_state_dict(saved["optimizer"])
        if trainer.scaler is not None and saved.get("scaler"):
            trainer.scaler.load_state_dict(saved["scaler"])
        state = {k: saved[k] for k in state}
    elif rank0:
        why_new = changed_inputs(folder, cfg)
        if why_new:
            log.info("%s: training anew: %s", folder.name, why_new)
        folder.mkdir(parents=True, exist_ok=True)
        resolved = {**cfg, "resolved": {
            "config_hash": config_hash(cfg), "run_name": folder.name, "inputs": run_inputs(cfg),
            "classes": trainer.classes,
            "device": str(trainer.device), "world_size": trainer.world, "torch": torch.__version__,
            "n_train": len(trainer.splits["train"]), "n_val": len(trainer.splits["val"]),
            "n_train_with_note": sum(bool(n) for n in trainer.splits["train"].notes), **weights_report(trainer)}}
        write_text(folder / "config.json", json.dumps(resolved, indent=2, sort_keys=True, default=str))
        if trainer.text:
            trainer.model.text_encoder.tokenizer.save_pretrained(folder / "text_encoder")
            trainer.model.text_encoder.encoder.config.save_pretrained(folder / "text_encoder")
    stale = state["epoch"] - state["best_epoch"] >= t.patience
    if rank0:
        log.info("%s: %s on %s, epochs %d-%d of %d%s", folder.name, t.strategy, trainer.device, state["epoch"] + 1,
                 t.epochs, t.epochs, " (resumed)" if state["epoch"] else "")
    threads = torch.get_num_threads()
    if t.threads:
        torch.set_num_threads(int(t.threads))
    try:
        _epochs(trainer, state, folder, stale, on_epoch_end, rank0)
    finally:
        torch.set_num_threads(threads)
    if rank0:
        best = state["history"][state["best_epoch"] - 1] if state["best_epoch"] else {}
        write_text(folder / "done", f"best epoch {state['best_epoch']} by {t.select_on}, val kappa "
                                     f"{best.get('val_kappa', float('nan')):.4f}\n")
    if dist.is_initialized():
        dist.barrier()
    return folder


def changed_inputs(folder: Path, cfg: dict[str, Any]) -> str:
    """Why a run of this strategy and seed is trained again although one exists beside it: which of its inputs
    (`run_inputs`) changed since the newest such run ("" when there is none, or only settings differ)."""
    siblings = sorted((p for p in folder.parent.glob(folder.name.rsplit("-", 1)[0] + "-*")
                       if p != folder and (p / "config.json").exists()), key=lambda p: p.stat().st_mtime_ns)
    if not siblings:
        return ""
    before = json.loads((siblings[-1] / "config.json").read_text()).get("resolved", {}).get("inputs")
    if before is None:
        return ""
    now = run_inputs(cfg)
    changed = sorted(k for k in now.keys() | before.keys() if now.get(k) != before.get(k))
    names = ["the image cache" if k == "images" else f"the {k.split(':', 1)[1]} notes" for k in changed]
    return f"{' and '.join(names)} changed since {siblings[-1].name}" if names else ""


def _epochs(trainer: Trainer, state: dict[str, Any], folder: Path, stale: bool,
            on_epoch_end: Callable[[dict[str, Any]], None] | None, rank0: bool) -> None:
    """The epoch loop of `fit`: train, validate, keep the best epoch, checkpoint, stop on patience; one progress
    bar per run and, with `train.tensorboard`, scalars per epoch in `<run_dir>/tensorboard`."""
    t, ckpt = trainer.t, folder / "checkpoint.pt"
    writer = _tensorboard(folder) if rank0 and t.tensorboard else None
    bar = progress(t.epochs, folder.name, initial=state["epoch"], unit="epoch") if rank0 else None
    try:
        for epoch in range(state["epoch"] + 1, t.epochs + 1):
            if stale:
                break
            row = _one_epoch(trainer, state, epoch, ckpt, folder, rank0)
            stop = bool(row.pop("_stop"))
            if writer is not None:
                for tag, value in tensorboard_scalars(row, trainer.optimizer.param_groups[0]["lr"]).items():
                    writer.add_scalar(tag, value, epoch)
                writer.flush()
            if rank0:
                log.info(epoch_line(folder.name, row, t.epochs, state["best_epoch"]))
            if bar is not None:
                bar.set_postfix(val_kappa=f"{row.get('val_kappa', float('nan')):.3f}", best=state["best_epoch"],
                                refresh=False)
                bar.update(1)
            if on_epoch_end is not None and rank0:
                on_epoch_end(row)
            stale = stop
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()


def _one_epoch(trainer: Trainer, state: dict[str, Any], epoch: int, ckpt: Path, folder: Path,
               rank0: bool) -> dict[str, Any]:
    """Train and validate one epoch, update the best weights, checkpoint; the row has `_stop` (patience ran out)."""
    t = trainer.t
    start = time.perf_counter()
    row = {"epoch": epoch, **trainer.train_epoch(epoch)}
    stop = torch.zeros(1, device=trainer.device)
    if rank0:
        row.update(trainer.evaluate())
        row["seconds"] = time.perf_counter() - start
        if selection_score(row, t.select_on) > state["best_score"]:
            state.update(best_score=selection_score(row, t.select_on), best_epoch=epoch,
                         best_model={k: v.detach().cpu().clone() for k, v in trainable_state(trainer.model).items()})
        state["epoch"] = epoch
        state["history"].append(row)
        _atomic_save({**state, "model": trainable_state(trainer.model), "optimizer": trainer.optimizer.state_dict(),
                      **({"scaler": trainer.scaler.state_dict()} if trainer.scaler is not None else {})}, ckpt)
        _write_history(state["history"], folder / "history.csv")
        stop[0] = float(epoch - state["best_epoch"] >= t.patience)
    if dist.is_initialized():
        dist.broadcast(stop, 0)
        dist.barrier()
    return {**row, "_stop": bool(stop[0])}


def weights_report(trainer: Trainer) -> dict[str, Any]:
    """What a run's config.json says its weights are: the image trunk's source ("random" or the file/package),
    the text encoder's and its load report (missing / unexpected keys), and the GPU settings made."""
    model = trainer.model
    amp = "fp16+GradScaler" if trainer.scaler else "bf16" if trainer.device.type == "cuda" else "fp32"
    out: dict[str, Any] = {"image_weights": getattr(model.image_encoder, "weights_source", "given"),
                           "cuda_settings": trainer.cuda_settings, "amp": amp, "compiled": bool(trainer.t.compile)}
    if model.text_encoder is not None:
        out["text_weights"] = getattr(model.text_encoder, "weights_source", "given")
        out["text_loading_info"] = getattr(model.text_encoder, "loading_info", {})
    return out


def epoch_line(run: str, row: dict[str, Any], epochs: int, best_epoch: int) -> str:
    """One log line per epoch: the run, epoch k/n, the training loss, validation kappa and image loss, the best
    epoch so far, samples/s and seconds."""
    return (f"{run} epoch {row['epoch']}/{epochs}: train_loss {row['train_loss']:.4f} val_kappa "
            f"{row.get('val_kappa', float('nan')):.4f} val_image_loss {row.get('val_image_loss', float('nan')):.4f} "
            f"best {best_epoch} | {row.get('samples_per_s', float('nan')):.0f} samples/s, "
            f"{row.get('seconds', float('nan')):.1f} s")


def _tensorboard(folder: Path) -> Any:
    """A SummaryWriter in `<run_dir>/tensorboard`, or None (one warning) where tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # torch's writer needs the tensorboard package
        log.warning("train.tensorboard is on but tensorboard cannot be imported (%s): pip install tensorboard; "
                    "training goes on without it", err)
        return None
    return SummaryWriter(str(folder / "tensorboard"))


def run_summary(runs: dict[str, Path]) -> pd.DataFrame:
    """One row per run: training size, best epoch and its val kappa/accuracy, epochs run, median samples/s, seconds."""
    import pandas as pd

    rows = []
    for name, folder in runs.items():
        hist = pd.read_csv(Path(folder) / "history.csv")
        run_cfg = json.loads((Path(folder) / "config.json").read_text())
        resolved = run_cfg["resolved"]
        best_epoch = int(read_checkpoint(Path(folder) / "checkpoint.pt")["best_epoch"])
        best = hist.loc[hist["epoch"] == best_epoch].iloc[0]
        rows.append({"run": name, "n_train": resolved["n_train"], "best_epoch": int(best["epoch"]),
                     "best_val_kappa": float(best["val_kappa"]),
                     "best_val_accuracy": float(best["val_accuracy"]), "epochs_run": len(hist),
                     "samples_per_s": float(hist["samples_per_s"].median()), "seconds": float(hist["seconds"].sum()),
                     "run_dir": str(folder)})
    return pd.DataFrame(rows)


def tensorboard_scalars(row: dict[str, Any], lr: float) -> dict[str, float]:
    """One epoch's scalars (tag -> value): `train_<term>` as `train/<term>`, `val_<metric>` as `val/<metric>`,
    anything else (samples_per_s, seconds) as `run/<name>`, and the learning rate as `run/lr`."""
    out = {}
    for key, value in row.items():
        if key == "epoch":
            continue
        head, _, rest = key.partition("_")
        out[f"{head}/{rest}" if head in ("train", "val") and rest else f"run/{key}"] = float(value)
    out["run/lr"] = float(lr)
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: `python -m dermlib.train --profile demo --set train.strategy=M+P1 --set train.epochs=3` (torchrun-able)."""
    parser = argparse.ArgumentParser(description="Train one dermlib model (see dermlib.train.runs.fit).")
    add_cli_arguments(parser)
    log_to_stderr()  # one line per epoch, visible under nohup
    cfg, _ = config_from_cli(parser, parser.parse_args(argv))
    folder = fit(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(folder)
    return 0
