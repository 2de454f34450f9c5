"""Train one model (`fit`), load it back (`load_run`) and embed images and notes with it (`encode`).

A run lives in `<work_dir>/runs/<strategy>-seed<k>-<hash8>/` where the hash covers the data, notes and train
settings: `config.json` (resolved), `checkpoint.pt` (last and best weights, optimiser, history), `history.csv`,
`text_encoder/` (tokenizer + encoder config, so a run loads offline) and a `done` marker. A finished run with the
same hash is reused; an interrupted one resumes from its last checkpoint to the same result (every random draw
is seeded by (seed, epoch)). On CUDA: bf16 autocast, channels_last, fused AdamW, background batch building with
pinned memory. Multi-GPU: `torchrun --nproc_per_node K -m dermlib.train ...` (DDP, NT-Xent over the global batch).
"""

from __future__ import annotations

import argparse
import contextlib
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
from dermlib.batches import (Prefetcher, Split, augment, epoch_order, images_to_float, load_splits, make_batch,
                             pad_batch, to_device, tokenize)
from dermlib.losses import TERMS, MultimodalLoss
from dermlib.models import MultimodalModel, build_model

HASHED_SECTIONS = ("data", "notes", "train")
UNHASHED_TRAIN_KEYS = ("device", "num_workers")  # how a run executes, not what it computes


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


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, nothing on CPU (fp32)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


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


def image_identity(cfg: dict[str, Any]) -> str:
    """What decides a frozen trunk's features: encoder, weights and the preprocessed image cache."""
    cache = features.cache_fingerprint(Path(cfg["work_dir"]) / "cache")
    return f"{cfg['train']['image_encoder']}:pretrained={cfg['train']['pretrained']}:cache={cache}"


def text_identity(cfg: dict[str, Any]) -> str:
    """What decides a frozen text encoder's features (besides the token ids)."""
    return f"{cfg['train']['text_encoder']}:{cfg['train']['pooling']}"


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
        self.optimizer = torch.optim.AdamW(params, lr=self.t["lr"], weight_decay=self.t["weight_decay"],
                                           fused=self.device.type == "cuda")
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
        """Validation kappa (image branch, argmax) and the full loss, on the unwrapped model (no collectives)."""
        from sklearn.metrics import cohen_kappa_score

        self.model.eval()
        loss = MultimodalLoss(self.t["loss_weights"], self.t["temperature"])
        preds, total, count = [], 0.0, 0
        split = self.splits["val"]
        for _, batch in self._batches(split, 0, train=False):
            with autocast(self.device):
                x = images_to_float(batch["images"]) if "images" in batch else None
                out = self.model(x, batch.get("input_ids"), batch.get("attention_mask"), batch.get("text_features"),
                                 batch.get("image_features"))
                value, _ = loss(out, batch["labels"], batch.get("text_mask"))
            preds.append(out.image_logits.float().argmax(1).cpu())
            total += float(value) * len(batch["labels"])
            count += len(batch["labels"])
        predicted = torch.cat(preds).numpy()
        kappa = cohen_kappa_score(split.labels, predicted, labels=list(range(len(self.classes))))
        return {"val_kappa": float(0.0 if np.isnan(kappa) else kappa), "val_loss": total / count,
                "val_accuracy": float((predicted == split.labels).mean())}


def trainable_state(model: MultimodalModel) -> dict[str, torch.Tensor]:
    """The state dict without frozen encoders (they are rebuilt from their pretrained source): a few MB at most."""
    frozen = model.frozen_prefixes()
    return {k: v for k, v in model.state_dict().items() if not k.startswith(frozen)}


def load_trainable(model: MultimodalModel, state: dict[str, torch.Tensor]) -> None:
    """Load a `trainable_state` (or a full state dict); anything missing must belong to a frozen encoder."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    frozen = model.frozen_prefixes()
    lost = [k for k in missing if not k.startswith(frozen)]
    if lost or unexpected:
        raise RuntimeError(f"checkpoint does not fit the model: missing {lost[:5]}, unexpected {unexpected[:5]}")


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
    state = {"epoch": 0, "history": [], "best_kappa": -np.inf, "best_epoch": 0, "best_model": None}
    ckpt = folder / "checkpoint.pt"
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
    for epoch in range(state["epoch"] + 1, t["epochs"] + 1):
        if stale:
            break
        start = time.perf_counter()
        row = {"epoch": epoch, **trainer.train_epoch(epoch)}
        stop = torch.zeros(1, device=trainer.device)
        if rank0:
            row.update(trainer.evaluate())
            row["seconds"] = time.perf_counter() - start
            if row["val_kappa"] > state["best_kappa"]:
                state.update(best_kappa=row["val_kappa"], best_epoch=epoch,
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
    if rank0:
        (folder / "done").write_text(f"best epoch {state['best_epoch']}, val kappa {state['best_kappa']:.4f}\n")
    if dist.is_initialized():
        dist.barrier()
    return folder


def load_run(run_dir: str | Path) -> tuple[MultimodalModel, dict[str, Any]]:
    """The best-epoch model of a finished run (eval mode, CPU) and its resolved config; works offline."""
    folder = Path(run_dir)
    if not (folder / "done").exists():
        raise FileNotFoundError(f"{folder} is not a finished run (no `done` marker): train it with "
                                f"dermlib.train.fit (notebook 03_train)")
    cfg = json.loads((folder / "config.json").read_text())
    t = cfg["train"]
    # frozen encoders are not in the checkpoint: they come back from their pretrained source (offline packages
    # for the demo); trained ones are built empty from the run's saved config and filled from the checkpoint
    text_frozen = t["train_last_n_text_layers"] == 0
    text_dir = folder / "text_encoder" if t["strategy"] != "Img" and not text_frozen else None
    model = build_model(t, len(cfg["resolved"]["classes"]), pretrained=bool(t["freeze_image_encoder"] and t["pretrained"]),
                        text_dir=text_dir)
    saved = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=False)
    load_trainable(model, saved["best_model"] if saved["best_model"] is not None else saved["model"])
    return model.eval(), cfg


@torch.no_grad()
def encode(model: MultimodalModel, images_uint8: np.ndarray, notes: list[str | None] | None,
           config: dict[str, Any], batch_size: int = 256, *, pool_id: str | None = None) -> dict[str, np.ndarray]:
    """Embed images (uint8 [N,S,S,3], e.g. from the cache) and optionally one note per image.

    Returns float32 numpy arrays `image_emb` (N,E) and `image_logits` (N,C); with notes also `text_emb` and
    `text_logits` (rows whose note is None are NaN). Embeddings are the RAW projections (not L2-normalised):
    normalise before cosine similarity / retrieval. Runs on the model's device, in eval mode. With `pool_id`
    (a name for exactly these images), frozen encoders' outputs are read from / kept in `<work_dir>/features`,
    so a grid of runs encodes the pool once.
    """
    if notes is not None and len(notes) != len(images_uint8):
        raise ValueError(f"encode: {len(images_uint8)} images but {len(notes)} notes")
    if notes is not None and model.text_encoder is None:
        raise ValueError("encode: notes given to an image-only (Img) model")
    if images_uint8.ndim != 4 or images_uint8.shape[-1] != 3 or images_uint8.dtype != np.uint8:
        raise ValueError(f"encode: images must be uint8 [N,S,S,3], got {images_uint8.dtype} {images_uint8.shape}")
    model.eval()
    device = next(model.parameters()).device
    frozen = model.frozen_prefixes() if pool_id is not None else ()
    folder = Path(config["work_dir"]) / "features"
    out: dict[str, list[np.ndarray]] = {"image_emb": [], "image_logits": []}
    trunk = None
    if "image_encoder." in frozen:
        trunk = features.image_features(model.image_encoder, images_uint8, np.arange(len(images_uint8)), views=1,
                                        identity=f"{image_identity(config)}:pool={pool_id}", folder=folder,
                                        device=device, batch_size=batch_size)[0]
    for start in range(0, len(images_uint8), batch_size):
        with autocast(device):
            if trunk is not None:
                emb = model.image_proj(torch.from_numpy(trunk[start: start + batch_size]).to(device))
            else:
                x = images_to_float(torch.from_numpy(np.ascontiguousarray(images_uint8[start: start + batch_size]))
                                    .to(device))
                emb = model.encode_image(x)
            out["image_emb"].append(emb.float().cpu().numpy())
            out["image_logits"].append(model.classifier(emb).float().cpu().numpy())
    if notes is not None:
        tok = model.text_encoder.tokenizer
        kept = [i for i, n in enumerate(notes) if n is not None]
        ids = tokenize(tok, [notes[i] for i in kept], config["train"]["max_text_len"])
        emb_dim, n_cls = out["image_emb"][0].shape[1], out["image_logits"][0].shape[1]
        text_emb = np.full((len(notes), emb_dim), np.nan, dtype=np.float32)
        text_logits = np.full((len(notes), n_cls), np.nan, dtype=np.float32)
        pooled = None
        if "text_encoder." in frozen:
            pooled = features.text_features(model.text_encoder, ids, pad_id=int(tok.pad_token_id),
                                            identity=text_identity(config), folder=folder, device=device,
                                            batch_size=batch_size)
        for start in range(0, len(kept), batch_size):
            rows = kept[start: start + batch_size]
            with autocast(device):
                if pooled is not None:
                    emb = model.text_proj(torch.from_numpy(pooled[start: start + batch_size]).to(device))
                else:
                    input_ids, mask = pad_batch(ids[start: start + batch_size], int(tok.pad_token_id))
                    emb = model.encode_text(input_ids.to(device), mask.to(device))
                text_emb[rows] = emb.float().cpu().numpy()
                text_logits[rows] = model.classifier(emb).float().cpu().numpy()
        out["text_emb"], out["text_logits"] = [text_emb], [text_logits]
    return {k: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for k, v in out.items()}


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
        best = hist.loc[hist["val_kappa"].idxmax()]
        resolved = json.loads((Path(folder) / "config.json").read_text())["resolved"]
        rows.append({"run": name, "n_train": resolved["n_train"], "best_epoch": int(best["epoch"]),
                     "best_val_kappa": float(best["val_kappa"]),
                     "best_val_accuracy": float(best["val_accuracy"]), "epochs_run": len(hist),
                     "samples_per_s": float(hist["samples_per_s"].median()), "seconds": float(hist["seconds"].sum()),
                     "run_dir": str(folder)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    """CLI: `python -m dermlib.train --profile demo --set train.strategy=M+P1 --set train.epochs=3` (torchrun-able)."""
    from dermlib.config import get_config, parse_sets

    parser = argparse.ArgumentParser(description="Train one dermlib model (see dermlib.train.fit).")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted config override; VALUE is parsed as JSON when it can be (e.g. 3, true, [0,1])")
    args = parser.parse_args(argv)
    try:
        cfg = get_config(args.profile, parse_sets(args.set))
    except (KeyError, ValueError) as err:
        parser.error(str(err).strip('"'))
    folder = fit(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
