"""Train one model (`fit`), or one per strategy (`fit_strategies`); `dermlib.embed` loads a run back and embeds with it.

A run lives in `<work_dir>/runs/<strategy>-seed<k>-<hash8>/` where the hash covers the data, notes and train
settings: `config.json` (resolved), `checkpoint.pt` (last and best weights, optimiser, history), `history.csv`,
`text_encoder/` (tokenizer + encoder config, so a run loads offline) and a `done` marker. A finished run with the
same hash is reused; an interrupted one resumes from its last checkpoint to the same result (every random draw
is seeded by (seed, epoch)). On CUDA: bf16 autocast, channels_last, fused AdamW, background batch building with
pinned memory. Multi-GPU: `torchrun --nproc_per_node K -m dermlib.train ...` (DDP, NT-Xent over the global batch).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from dermlib import features
from dermlib.embed import autocast, image_identity, load_trainable, text_identity, trainable_state
from dermlib.batches import (Prefetcher, Split, augment, epoch_order, images_to_float, load_splits, make_batch,
                             to_device)
from dermlib.losses import TERMS, MultimodalLoss
from dermlib.models import MultimodalModel, build_model

HASHED_SECTIONS = ("data", "notes", "train")
UNHASHED_TRAIN_KEYS = ("device", "num_workers", "threads")  # how a run executes, not what it computes


def config_hash(cfg: dict[str, Any]) -> str:
    """8 hex digits identifying what a run computes (data, notes and train settings; not paths or device)."""
    key = {s: cfg.get(s) for s in HASHED_SECTIONS}
    key["train"] = {k: v for k, v in cfg["train"].items() if k not in UNHASHED_TRAIN_KEYS}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]


def run_dir(cfg: dict[str, Any]) -> Path:
    """`<work_dir>/runs/<strategy>-seed<k>-<hash8>` for this config (strategy "M,P3" is written "M_P3")."""
    t = cfg["train"]
    return Path(cfg["work_dir"]) / "runs" / f"{t['strategy'].replace(',', '_')}-seed{t['seed']}-{config_hash(cfg)}"


def pick_device(setting: str = "auto") -> torch.device:
    """"auto" -> the local CUDA device when there is one (LOCAL_RANK under torchrun), else CPU."""
    device = torch.device(setting if setting != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def _gather_global(img: torch.Tensor, txt: torch.Tensor, mask: torch.Tensor):
    """All ranks' pairs in rank order; embeddings keep their gradient (NT-Xent over the global batch)."""
    import warnings

    from torch.distributed.nn.functional import all_gather  # differentiable; deprecated (not removed) in torch 2.14

    flag = mask.to(torch.uint8)  # bool collectives are not supported by every backend
    masks = [torch.empty_like(flag) for _ in range(dist.get_world_size())]
    dist.all_gather(masks, flag)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return (torch.cat(all_gather(img.contiguous())), torch.cat(all_gather(txt.contiguous())),
                torch.cat(masks).bool())


OPTIMIZERS = ("adam_amsgrad_l2", "adamw")
SELECTION = ("val_image_loss", "val_kappa")  # what picks the best epoch: lower loss, or higher kappa


def make_optimizer(params: list[torch.nn.Parameter], t: dict[str, Any], fused: bool) -> torch.optim.Optimizer:
    """`train.optimizer`: "adam_amsgrad_l2" (Adam with amsgrad, weight decay as an L2 term in the gradient: the
    authors' code) or "adamw" (decoupled weight decay)."""
    if t["optimizer"] == "adam_amsgrad_l2":
        return torch.optim.Adam(params, lr=t["lr"], weight_decay=t["weight_decay"], amsgrad=True)
    if t["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=t["lr"], weight_decay=t["weight_decay"], fused=fused)
    raise ValueError(f"train.optimizer must be one of {OPTIMIZERS}, not {t['optimizer']!r}")


def selection_score(row: dict[str, float], select_on: str) -> float:
    """Higher is better: the validation kappa, or minus the image branch's validation cross-entropy."""
    if select_on not in SELECTION:
        raise ValueError(f"train.select_on must be one of {SELECTION}, not {select_on!r}")
    return row["val_kappa"] if select_on == "val_kappa" else -row["val_image_loss"]


class _Trainer:
    """The state of one run: model, optimiser, data, loss, and the pieces of the loop."""

    def __init__(self, cfg: dict[str, Any], *, model: MultimodalModel | None = None,
                 splits: dict[str, Split] | None = None) -> None:
        """Build the model and read the data `cfg` describes (a benchmark may pass its own model and splits)."""
        self.cfg, self.t = cfg, cfg["train"]
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.device = pick_device(self.t.get("device", "auto"))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if model is None:
            from dermlib.data.labels import classes

            self.classes = classes(cfg["data"].get("taxonomy", "isic8"))
            torch.manual_seed(self.t["seed"])
            model = build_model(self.t, len(self.classes))
        else:
            self.classes = [str(c) for c in range(model.classifier.out_features)]
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self.text = self.model.text_encoder is not None
        tok = self.model.text_encoder.tokenizer if self.text else None
        self.pad_id = int(tok.pad_token_id) if tok is not None else 0
        has_cls = tok is not None and tok.cls_token_id is not None
        self.cls_sep = (int(tok.cls_token_id), int(tok.sep_token_id)) if has_cls else None
        self.splits = load_splits(cfg, tok) if splits is None else splits
        self.feature_dir = Path(cfg["work_dir"]) / "features"
        if self.text and self.model.text_frozen():
            for split in self.splits.values():
                split.note_features = self._frozen_text_features(split)
        if self.model.frozen_prefixes()[:1] == ("image_encoder.",):
            for name, split in self.splits.items():
                views = int(self.t["feature_views"]) if name == "train" and self.t["augment"] else 1
                split.image_features = features.image_features(
                    self.model.image_encoder, split.images, split.rows, views=views, identity=image_identity(cfg),
                    folder=self.feature_dir, device=self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(params, self.t, fused=self.device.type == "cuda")
        self.net = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.loss = MultimodalLoss(self.t["loss_weights"], self.t["temperature"],
                                   gather=_gather_global if self.world > 1 else None)

    def _frozen_text_features(self, split: Split) -> list[np.ndarray]:
        """A frozen text encoder's pooled output for every note, once per note text (kept in <work_dir>/features)."""
        enc = self.model.text_encoder
        flat = [seq for notes in split.notes for seq in notes]
        flat_feats = features.text_features(enc, flat, pad_id=self.pad_id, identity=text_identity(self.cfg),
                                            folder=self.feature_dir, device=self.device)
        out, pos = [], 0
        for notes in split.notes:
            out.append(flat_feats[pos: pos + len(notes)])
            pos += len(notes)
        return out

    def _batches(self, split: Split, epoch: int, train: bool):
        """Device batches of one epoch, built in a background thread (pinned memory) on CUDA."""
        bs = self.t["batch_size"]
        order = epoch_order(len(split), bs, self.t["seed"], epoch, shuffle=train,
                            rank=self.rank if train else 0, world=self.world if train else 1, drop_last=train)
        cuda = self.device.type == "cuda"

        def build(job):
            k, idx = job
            rng = np.random.default_rng([self.t["seed"], epoch, k]) if train else None
            batch = make_batch(split, idx, with_text=self.text, pad_id=self.pad_id, cls_sep=self.cls_sep, rng=rng,
                               pin=cuda)
            if "text_mask" in batch and bool(batch["text_mask"].all()):
                del batch["text_mask"]  # every row has a note: the loss then needs no device sync
            return batch

        jobs = list(enumerate(order))
        source = Prefetcher(jobs, build) if cuda else map(build, jobs)
        for k, batch in enumerate(source):
            yield k, to_device(batch, self.device)

    def _forward(self, batch: dict[str, torch.Tensor], x: torch.Tensor | None):
        net_out = self.net(x, batch.get("input_ids"), batch.get("attention_mask"), batch.get("text_features"),
                           batch.get("image_features"))
        return self.loss(net_out, batch["labels"], batch.get("text_mask"))

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training split; returns the mean of each loss term and the samples/s."""
        self.model.train()
        torch.manual_seed(self.t["seed"] * 100_003 + epoch)  # dropout: same draws after a resume
        aug_gen = torch.Generator().manual_seed(self.t["seed"] * 100_003 + epoch)
        sums = torch.zeros(len(TERMS) + 2, dtype=torch.float64, device=self.device)  # summed on device: no syncs
        start = time.perf_counter()
        for k, batch in self._batches(self.splits["train"], epoch, train=True):
            # dropout draws from (seed, epoch, step): the image branch of every strategy sees the same masks
            torch.manual_seed((self.t["seed"] * 100_003 + epoch) * 10_007 + k)
            x = images_to_float(batch["images"]) if "images" in batch else None
            if x is not None and self.t["augment"]:
                x = augment(x, aug_gen)
            with autocast(self.device):
                total, terms = self._forward(batch, x)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            n = len(batch["labels"])
            sums[0] += total.detach().double() * n
            for i, term in enumerate(TERMS):
                if term in terms:
                    sums[1 + i] += terms[term].double() * n
            sums[-1] += n
        if self.world > 1:
            dist.all_reduce(sums)
        sums = sums.cpu()
        seconds = time.perf_counter() - start
        out = {"train_loss": float(sums[0] / sums[-1])}
        active = ["ce_image"] + (list(TERMS[1:]) if self.text else [])
        out.update({f"train_{t}": float(sums[1 + TERMS.index(t)] / sums[-1]) for t in active})
        out["samples_per_s"] = float(sums[-1]) / seconds
        return out

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation kappa (image branch, argmax), the image branch's cross-entropy and the full loss, on the
        unwrapped model (no collectives)."""
        from sklearn.metrics import cohen_kappa_score

        self.model.eval()
        loss = MultimodalLoss(self.t["loss_weights"], self.t["temperature"])
        preds, total, image_ce, count = [], 0.0, 0.0, 0
        split = self.splits["val"]
        for _, batch in self._batches(split, 0, train=False):
            with autocast(self.device):
                x = images_to_float(batch["images"]) if "images" in batch else None
                out = self.model(x, batch.get("input_ids"), batch.get("attention_mask"), batch.get("text_features"),
                                 batch.get("image_features"))
                value, _ = loss(out, batch["labels"], batch.get("text_mask"))
            preds.append(out.image_logits.float().argmax(1).cpu())
            image_ce += float(torch.nn.functional.cross_entropy(out.image_logits.float(), batch["labels"],
                                                                reduction="sum"))
            total += float(value) * len(batch["labels"])
            count += len(batch["labels"])
        predicted = torch.cat(preds).numpy()
        kappa = cohen_kappa_score(split.labels, predicted, labels=list(range(len(self.classes))))
        return {"val_kappa": float(0.0 if np.isnan(kappa) else kappa), "val_loss": total / count,
                "val_image_loss": image_ce / count, "val_accuracy": float((predicted == split.labels).mean())}


def _atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_history(rows: list[dict[str, Any]], path: Path) -> None:
    """history.csv: one row per epoch (epoch, train losses per term, samples/s, val kappa/loss/accuracy, seconds)."""
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)


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
    trainer = _Trainer(cfg)
    t = cfg["train"]
    state = {"epoch": 0, "history": [], "best_score": -np.inf, "best_epoch": 0, "best_model": None}
    ckpt = folder / "checkpoint.pt"  # written by _epochs after every epoch
    if ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        load_trainable(trainer.model, saved["model"])
        trainer.optimizer.load_state_dict(saved["optimizer"])
        state = {k: saved[k] for k in state}
    elif rank0:
        folder.mkdir(parents=True, exist_ok=True)
        resolved = {**cfg, "resolved": {
            "config_hash": config_hash(cfg), "run_name": folder.name, "classes": trainer.classes,
            "device": str(trainer.device), "world_size": trainer.world, "torch": torch.__version__,
            "n_train": len(trainer.splits["train"]), "n_val": len(trainer.splits["val"]),
            "n_train_with_note": sum(bool(n) for n in trainer.splits["train"].notes)}}
        (folder / "config.json").write_text(json.dumps(resolved, indent=2, sort_keys=True, default=str))
        if trainer.text:
            trainer.model.text_encoder.tokenizer.save_pretrained(folder / "text_encoder")
            trainer.model.text_encoder.encoder.config.save_pretrained(folder / "text_encoder")
    stale = state["epoch"] - state["best_epoch"] >= t["patience"]
    threads = torch.get_num_threads()
    if t["threads"]:
        torch.set_num_threads(int(t["threads"]))
    try:
        _epochs(trainer, state, folder, stale, on_epoch_end, rank0)
    finally:
        torch.set_num_threads(threads)
    if rank0:
        best = state["history"][state["best_epoch"] - 1] if state["best_epoch"] else {}
        (folder / "done").write_text(f"best epoch {state['best_epoch']} by {t['select_on']}, val kappa "
                                     f"{best.get('val_kappa', float('nan')):.4f}\n")
    if dist.is_initialized():
        dist.barrier()
    return folder


def _epochs(trainer: _Trainer, state: dict[str, Any], folder: Path, stale: bool,
            on_epoch_end: Callable[[dict[str, Any]], None] | None, rank0: bool) -> None:
    """The epoch loop of `fit`: train, validate, keep the best epoch, checkpoint, stop on patience."""
    t, ckpt = trainer.t, folder / "checkpoint.pt"
    for epoch in range(state["epoch"] + 1, t["epochs"] + 1):
        if stale:
            break
        start = time.perf_counter()
        row = {"epoch": epoch, **trainer.train_epoch(epoch)}
        stop = torch.zeros(1, device=trainer.device)
        if rank0:
            row.update(trainer.evaluate())
            row["seconds"] = time.perf_counter() - start
            if selection_score(row, t["select_on"]) > state["best_score"]:
                state.update(best_score=selection_score(row, t["select_on"]), best_epoch=epoch,
                             best_model={k: v.detach().cpu().clone() for k, v in trainable_state(trainer.model).items()})
            state["epoch"] = epoch
            state["history"].append(row)
            _atomic_save({**state, "model": trainable_state(trainer.model),
                          "optimizer": trainer.optimizer.state_dict()}, ckpt)
            _write_history(state["history"], folder / "history.csv")
            stop[0] = float(epoch - state["best_epoch"] >= t["patience"])
        if dist.is_initialized():
            dist.broadcast(stop, 0)
            dist.barrier()
        if on_epoch_end is not None and rank0:
            on_epoch_end(row)
        stale = bool(stop[0])


def fit_strategies(cfg: dict[str, Any], strategies: list[str] | None = None, seed: int | None = None,
                   on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Path]:
    """Train (or reuse) one run per strategy (default `cfg["eval"]["strategies"]`, seed `cfg["eval"]["seeds"][0]`)."""
    runs = {}
    for strategy in strategies or cfg["eval"]["strategies"]:
        one = {**cfg, "train": {**cfg["train"], "strategy": strategy,
                                "seed": cfg["eval"]["seeds"][0] if seed is None else seed}}
        runs[strategy] = fit(one, on_epoch_end)
    return runs


def run_summary(runs: dict[str, Path]) -> Any:
    """One row per run: training size, best epoch and its val kappa/accuracy, epochs run, median samples/s, seconds."""
    import pandas as pd

    rows = []
    for name, folder in runs.items():
        hist = pd.read_csv(Path(folder) / "history.csv")
        run_cfg = json.loads((Path(folder) / "config.json").read_text())
        resolved = run_cfg["resolved"]
        best_epoch = int(torch.load(Path(folder) / "checkpoint.pt", map_location="cpu", weights_only=False)["best_epoch"])
        best = hist.loc[hist["epoch"] == best_epoch].iloc[0]
        rows.append({"run": name, "n_train": resolved["n_train"], "best_epoch": int(best["epoch"]),
                     "best_val_kappa": float(best["val_kappa"]),
                     "best_val_accuracy": float(best["val_accuracy"]), "epochs_run": len(hist),
                     "samples_per_s": float(hist["samples_per_s"].median()), "seconds": float(hist["seconds"].sum()),
                     "run_dir": str(folder)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    """CLI: `python -m dermlib.train --profile demo --set train.strategy=M+P1 --set train.epochs=3` (torchrun-able)."""
    from dermlib.config import add_cli_arguments, config_from_cli

    parser = argparse.ArgumentParser(description="Train one dermlib model (see dermlib.train.fit).")
    add_cli_arguments(parser)
    cfg, _ = config_from_cli(parser, parser.parse_args(argv))
    folder = fit(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
