"""One run's trainer: the model, optimiser, data and loss, and the public pieces of the loop (`Trainer.step`,
`train_epoch`, `evaluate`) that `dermlib.train.runs.fit` drives and `benchmarks/bench_train.py` measures; and what a
checkpoint holds of a model (`trainable_state`, `load_trainable`).

Every random draw is seeded by (seed, epoch, step), so an interrupted run resumes to the same result. On CUDA:
cuDNN autotuning and TF32, bf16 autocast (fp16 with a gradient scaler on GPUs without bf16), channels_last, fused
Adam/AdamW, `train.num_workers` threads building batches with pinned memory, `train.compile` opt-in; under
torchrun, DDP with NT-Xent over the global batch.
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from dermlib import metrics
from dermlib.data.labels import config_classes
from dermlib.train import features
from dermlib.train.batches import Prefetcher, Split, augment, epoch_order, images_to_float, load_splits, make_batch, to_device
from dermlib.train.features import image_identity, text_identity
from dermlib.train.losses import TERMS, MultimodalLoss
from dermlib.train.device import autocast, configure_cuda, grad_scaler, pick_device
from dermlib.train.model import MultimodalModel, build_model
from dermlib.train.settings import TrainSettings
from dermlib.workdir import WorkDir


def gather_global(img: torch.Tensor, txt: torch.Tensor, mask: torch.Tensor):
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


def make_optimizer(params: list[torch.nn.Parameter], optimizer: str, lr: float, weight_decay: float,
                   fused: bool) -> torch.optim.Optimizer:
    """`train.optimizer`: "adam_amsgrad_l2" (Adam with amsgrad, weight decay as an L2 term in the gradient: the
    authors' code) or "adamw" (decoupled weight decay); `fused` (on CUDA): one fused kernel per step."""
    if optimizer == "adam_amsgrad_l2":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, amsgrad=True, fused=fused or None)
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    raise ValueError(f"train.optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")


def selection_score(row: dict[str, float], select_on: str) -> float:
    """Higher is better: the validation kappa, or minus the image branch's validation cross-entropy."""
    if select_on not in SELECTION:
        raise ValueError(f"train.select_on must be one of {SELECTION}, not {select_on!r}")
    return row["val_kappa"] if select_on == "val_kappa" else -row["val_image_loss"]


class Trainer:
    """The state of one run: model, optimiser, data, loss, and its public loop pieces (`device_batch`, `step`,
    `train_epoch`, `evaluate`) that `fit` and `benchmarks/bench_train.py` both drive."""

    def __init__(self, cfg: dict[str, Any], *, model: MultimodalModel | None = None,
                 splits: dict[str, Split] | None = None) -> None:
        """Build the model and read the data `cfg` describes (a benchmark may pass its own model and splits)."""
        self.cfg, self.t = cfg, TrainSettings.from_config(cfg)
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.device = pick_device(self.t.device, require_cuda=self.t.require_cuda)  # before anything is built
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.cuda_settings = configure_cuda(self.device)
        if model is None:
            self.classes = config_classes(cfg)
            torch.manual_seed(self.t.seed)
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
        self.feature_dir = WorkDir.of(cfg).features
        # frozen encoders' outputs, once (a split that already carries them, a benchmark's, keeps its own)
        if self.text and self.model.text_frozen():
            for split in self.splits.values():
                if split.note_features is None:
                    split.note_features = self._frozen_text_features(split)
        if self.model.trunk_frozen():  # pooled features, or the maps before a trunk adapter
            for name, split in self.splits.items():
                if split.image_features is not None:
                    continue
                views = int(self.t.feature_views) if name == "train" and self.t.augment else 1
                split.image_features = features.image_features(
                    self.model.image_encoder, split.images, split.rows, views=views, identity=image_identity(cfg),
                    folder=self.feature_dir, device=self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(params, self.t.optimizer, self.t.lr, self.t.weight_decay,
                                        fused=self.device.type == "cuda")
        self.scaler = grad_scaler(self.device)  # fp16 autocast only (GPUs without bf16)
        self.net: torch.nn.Module = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        if self.t.compile:  # the training forward only; evaluation runs the plain model
            self.net = torch.compile(self.net)
        self.loss = MultimodalLoss(self.t.loss_weights, self.t.temperature,
                                   gather=gather_global if self.world > 1 else None)

    def _frozen_text_features(self, split: Split) -> list[np.ndarray]:
        """A frozen text encoder's pooled output for every note, once per note text (kept in <work_dir>/features)."""
        enc = self.model.text_encoder
        flat = [seq for notes in split.notes for seq in notes]
        flat_feats = features.text_features(enc, flat, pad_id=self.pad_id, identity=text_identity(self.cfg),
                                            folder=self.feature_dir, device=self.device,
                                            store=features.note_store_path(self.cfg))
        out, pos = [], 0
        for notes in split.notes:
            out.append(flat_feats[pos: pos + len(notes)])
            pos += len(notes)
        return out

    def device_batch(self, split: Split, idx: np.ndarray, rng: np.random.Generator | None = None,
                     pin: bool = False) -> dict[str, torch.Tensor]:
        """The batch of rows `idx` of `split` (notes drawn with `rng`), on this trainer's device."""
        batch = make_batch(split, idx, with_text=self.text, pad_id=self.pad_id, cls_sep=self.cls_sep, rng=rng, pin=pin)
        if "text_mask" in batch and bool(batch["text_mask"].all()):
            del batch["text_mask"]  # every row has a note: the loss then needs no device sync
        return batch if pin else to_device(batch, self.device)

    def _batches(self, split: Split, epoch: int, train: bool):
        """Device batches of one epoch, built by `train.num_workers` background threads (pinned memory; at least one
        on CUDA), in order whatever their number (each batch's draws are seeded by its step)."""
        bs = self.t.batch_size
        order = epoch_order(len(split), bs, self.t.seed, epoch, shuffle=train,
                            rank=self.rank if train else 0, world=self.world if train else 1, drop_last=train)
        cuda = self.device.type == "cuda"

        def build(job):
            k, idx = job
            rng = np.random.default_rng([self.t.seed, epoch, k]) if train else None
            return self.device_batch(split, idx, rng, pin=cuda)

        jobs = list(enumerate(order))
        workers = max(int(self.t.num_workers), 1 if cuda else 0)
        source = Prefetcher(jobs, build, workers=workers) if workers else map(build, jobs)
        for k, batch in enumerate(source):
            yield k, to_device(batch, self.device) if cuda else batch

    def _forward(self, batch: dict[str, torch.Tensor], x: torch.Tensor | None):
        net_out = self.net(x, batch.get("input_ids"), batch.get("attention_mask"), batch.get("text_features"),
                           batch.get("image_features"))
        return self.loss(net_out, batch["labels"], batch.get("text_mask"))

    def step(self, batch: dict[str, torch.Tensor], images: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimiser step on a device batch; `images` are its float images (default: the batch's own pixels,
        unaugmented). Returns the detached total loss and the loss terms."""
        if images is None and "images" in batch:
            images = images_to_float(batch["images"])
        with autocast(self.device):
            total, terms = self._forward(batch, images)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            total.backward()
            self.optimizer.step()
        else:  # fp16: scaled loss, unscaled step (skipped where a gradient overflowed), scale adapted
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return total.detach(), terms

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training split; returns the mean of each loss term and the samples/s."""
        self.model.train()
        torch.manual_seed(self.t.seed * 100_003 + epoch)  # dropout: same draws after a resume
        aug_gen = torch.Generator().manual_seed(self.t.seed * 100_003 + epoch)
        sums = torch.zeros(len(TERMS) + 2, dtype=torch.float64, device=self.device)  # summed on device: no syncs
        start = time.perf_counter()
        for k, batch in self._batches(self.splits["train"], epoch, train=True):
            # dropout draws from (seed, epoch, step): the image branch of every strategy sees the same masks
            torch.manual_seed((self.t.seed * 100_003 + epoch) * 10_007 + k)
            x = images_to_float(batch["images"]) if "images" in batch else None
            if x is not None and self.t.augment:
                x = augment(x, aug_gen)
            total, terms = self.step(batch, x)
            n = len(batch["labels"])
            sums[0] += total.double() * n
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
        """Validation kappa (image branch, argmax), the image branch's cross-entropy and the full loss, and for a
        text run the alignment of image and note embeddings (`alignment_metrics`; NaN for Img), on the unwrapped
        model (no collectives, no random draws: each sample's first note)."""
        self.model.eval()
        loss = MultimodalLoss(self.t.loss_weights, self.t.temperature)
        preds, total, image_ce, count = [], 0.0, 0.0, 0
        image_emb, text_emb, has_note = [], [], []
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
            if out.text_emb is not None:
                image_emb.append(out.image_emb.float().cpu().numpy())
                text_emb.append(out.text_emb.float().cpu().numpy())
                mask = batch.get("text_mask")
                has_note.append(mask.cpu().numpy() if mask is not None else np.ones(len(batch["labels"]), bool))
        predicted = torch.cat(preds).numpy()
        kappa = metrics.cohen_kappa(split.labels, predicted)
        row = {"val_kappa": float(0.0 if np.isnan(kappa) else kappa), "val_loss": total / count,
               "val_image_loss": image_ce / count, "val_accuracy": float((predicted == split.labels).mean())}
        align = dict.fromkeys(ALIGNMENT_METRICS, float("nan"))
        if image_emb:
            noted = np.concatenate(has_note)
            sources = split.sources if split.sources is not None else np.zeros(len(split), dtype=np.int64)
            align = alignment_metrics(np.concatenate(image_emb)[noted], np.concatenate(text_emb)[noted],
                                      split.labels[noted], np.asarray(sources)[noted])
        return {**row, **align}


ALIGNMENT_METRICS = ("val_paired_cosine", "val_paired_cosine_above_chance_within_source", "val_map_i2t_within_source")


def alignment_metrics(image_emb: np.ndarray, text_emb: np.ndarray, labels: np.ndarray,
                      sources: np.ndarray) -> dict[str, float]:
    """How well a run's image and note embeddings (raw projections, one pair per row) align, as history.csv shows
    them per epoch: the mean paired cosine; that cosine minus the mean cosine of the image with the other notes of
    its own source (`metrics.paired_cosine_lift` within each source); and image->text class-level mAP with each
    query's own source's notes as gallery (`metrics.retrieval_ap`). A source with fewer than two pairs adds to the
    cosine only (as `dermlib.evaluate.scoring`'s per-source groups); NaN where nothing is defined."""
    nan = float("nan")
    if not len(image_emb):
        return dict.fromkeys(ALIGNMENT_METRICS, nan)
    lift, ap = np.full(len(image_emb), nan), np.full(len(image_emb), nan)
    for source in np.unique(sources):
        rows = np.flatnonzero(sources == source)
        if len(rows) >= 2:
            lift[rows] = metrics.paired_cosine_lift(image_emb[rows], text_emb[rows])
            ap[rows] = metrics.retrieval_ap(image_emb[rows], labels[rows], text_emb[rows], labels[rows])
    return dict(zip(ALIGNMENT_METRICS, (float(metrics.paired_cosine(image_emb, text_emb).mean()),
                                        metrics.nanmean(lift), metrics.nanmean(ap))))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A run's `checkpoint.pt`, read with `torch.load(weights_only=True)`: tensors, numbers, strings, lists and dicts
    only, so a file someone handed over cannot run code while it loads. A file holding anything else, or one that
    is truncated or corrupt, is refused with its name and what to do."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: refused: it holds objects other than tensors and plain values, which dermlib never "
                         f"writes ({str(err).splitlines()[0][:160]}). Do not load run folders from a source you do not "
                         f"trust; delete this run folder to train the run again") from None
    except (RuntimeError, EOFError) as err:
        raise ValueError(f"{path}: cannot be read (truncated or corrupt: {str(err).splitlines()[0][:160]}); delete "
                         f"this run folder to train the run again") from None


def trainable_state(model: MultimodalModel) -> dict[str, torch.Tensor]:
    """What training changes, in state-dict order: every parameter that trains and the persistent buffers (batch-norm
    statistics) outside the frozen encoders (`frozen_prefixes`). Frozen weights, whole encoders or the frozen
    layers of a partly trained one (PubMedBERT but its last layer), are rebuilt from their pretrained source, so a
    checkpoint is the size of what trains. A trunk adapter is in it."""
    frozen = model.frozen_prefixes()

    def collect(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
        if prefix in frozen:
            return {}
        own = [*((k, v) for k, v in module.named_parameters(recurse=False) if v.requires_grad),
               *((k, v) for k, v in module.named_buffers(recurse=False) if k not in module._non_persistent_buffers_set)]
        state = {f"{prefix}{k}": v.detach() for k, v in own}
        for name, child in module.named_children():
            state.update(collect(child, f"{prefix}{name}."))
        return state

    return collect(model, "")


def load_trainable(model: MultimodalModel, state: dict[str, torch.Tensor]) -> None:
    """Load a `trainable_state` (or a full state dict: checkpoints before frozen layers were left out); anything
    missing must be frozen (a frozen encoder, or a parameter that does not train)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    frozen = model.frozen_prefixes()
    fixed = {k for k, v in model.named_parameters() if not v.requires_grad}
    lost = [k for k in missing if not k.startswith(frozen) and k not in fixed]
    if lost or unexpected:
        raise RuntimeError(f"checkpoint does not fit the model: missing {lost[:5]}, unexpected {unexpected[:5]}")
