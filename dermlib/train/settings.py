"""How one run trains: `TrainSettings`, the typed view of a config's `train` section (see `dermlib.config`).

Every value comes from the config (no defaults here), so a profile's `BASE`/`CHANGES` stay the one place where a
setting is chosen; the `train` dict itself is what a run hashes and saves (`dermlib.train.runs.config_hash`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dermlib.config import BASE
from dermlib.grammar import IMG

# how a run executes, not what it computes: left out of a run's hash (`dermlib.train.runs.config_hash`)
# (a note store holds what encoding the notes gives, to float16 rounding: it changes the time taken, not the run)
UNHASHED_TRAIN_KEYS = ("device", "num_workers", "threads", "parallel_runs", "tensorboard", "note_features",
                       "require_cuda", "compile")
# keys added after runs were made, with the value that computes what those runs computed: at that value a key is
# left out of a run's hash (so such a run keeps its id) and a saved run without it loads with it
# (a random-init opt-in and the memory-saving DenseNet, whose recomputation updates batch-norm statistics twice,
# may compute something else: a run with either on has an id of its own)
NEUTRAL_TRAIN_KEYS: dict[str, Any] = {"trunk_adapter_rank": 0, "allow_random_init": False, "memory_efficient": False}


@dataclass(frozen=True)
class TrainSettings:
    """One run's training settings; the meaning of each is documented beside its value in `dermlib.config.BASE`."""

    strategy: str  # "Img", one note strategy, or a comma-separated list
    seed: int
    image_encoder: str
    text_encoder: str
    pretrained: bool
    allow_random_init: bool  # True: random image weights where the pretrained ones cannot load (else an error)
    memory_efficient: bool  # DenseNet121 with checkpointed dense layers (less GPU memory, more compute)
    freeze_image_encoder: bool
    trunk_adapter_rank: int  # 0: no adapter; r > 0: a rank-r adapter before the pooling (dermlib.train.trunk)
    feature_views: int
    embed_dim: int
    projection: str
    pooling: str
    train_last_n_text_layers: int
    max_text_len: int
    note_features: str | None
    batch_size: int
    epochs: int
    optimizer: str
    lr: float
    weight_decay: float
    select_on: str
    patience: int
    dropout: float
    augment: bool
    loss_weights: dict[str, float]
    temperature: float
    num_workers: int
    threads: int
    parallel_runs: int  # how many runs of a grid train at once (dermlib.train.grid); not part of a run's hash
    device: str
    require_cuda: bool  # device "auto" without a usable CUDA device is an error (the paper profile)
    compile: bool  # torch.compile the training forward (not part of a run's hash)
    tensorboard: bool

    @classmethod
    def from_section(cls, train: dict[str, Any]) -> TrainSettings:
        """From a `train` section (a profile's, or a saved run's `config.json`); names missing or unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        # a run saved before an execution-only key existed still loads: that key comes from BASE, not from here
        train = {**{k: BASE["train"][k] for k in UNHASHED_TRAIN_KEYS if k not in train}, **NEUTRAL_TRAIN_KEYS, **train}
        missing, unknown = sorted(names - set(train)), sorted(set(train) - names)
        if missing or unknown:
            raise KeyError(f"train settings: missing {missing}, unknown {unknown} (every key is in "
                           f"dermlib.config.BASE['train']; a run saved by an older dermlib needs retraining)")
        return cls(**{name: train[name] for name in names})

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> TrainSettings:
        """The settings of a full config (`get_config(...)` or a run's saved config)."""
        return cls.from_section(cfg["train"])

    def replace(self, **changes: Any) -> TrainSettings:
        """A copy with some settings changed (e.g. `strategy="Img"`)."""
        return dataclasses.replace(self, **changes)

    @property
    def text(self) -> bool:
        """Whether this run has a text branch (every strategy but the image-only baseline)."""
        return self.strategy != IMG
