"""Every path under a profile's work dir, named once.

    work = WorkDir.of(cfg)        # or WorkDir("work/demo")
    read_manifest(work.manifest); load_cache(work.cache); work.embeddings(run_id)

Layout: `manifest.parquet`, `cache/` (preprocessed images, `dermlib.data.preprocess`), `notes/notes.parquet` and
`notes/audit_summary.csv`, `runs/<run>/` (training), `features/` (frozen-encoder features), `results/` (the grid:
`results.parquet`, `runs/`, `samples/`, `embeddings/`, `prompts.json`), `records/`, `datasets/`,
`synthderm/` (the generated demo images), `notebooks/` (executed copies of other profiles).

A run with overrides, or of the `lab` profile, is a *variant*: its work dir is `<home>/scratch/<variant_name>/`, with
its figures in `figures/` there, so it never rewrites the committed demo (`dermlib.config.get_config` decides,
`link_shared` shares the home's data products when the variant's data and notes settings are the home's).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from dermlib.redact import redact_overrides

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def project_root() -> Path:
    """Where work/, figures/ and data/ live: `$DERMLIB_HOME`, else the clone dermlib runs from, else (an installed
    package: pip install . or a wheel) the current directory."""
    home = os.environ.get("DERMLIB_HOME")
    if home:
        return Path(home).resolve()
    if (SOURCE_ROOT / "pyproject.toml").is_file() and (SOURCE_ROOT / "dermlib").is_dir():
        return SOURCE_ROOT
    return Path.cwd().resolve()


REPO_ROOT = project_root()  # read once, at import
# What a variant shares with its home work dir when its data and notes settings are the home's: all of it is keyed
# by content or by the run's config hash, so another variant's files are never mistaken for its own
SHARED_ENTRIES = ("synthderm", "manifest.parquet", "cache", "notes", "features", "runs")


def work_dir(profile: str) -> Path:
    """Where a profile's generated data, caches and runs live (`$DERMLIB_WORK` overrides; never committed)."""
    base = os.environ.get("DERMLIB_WORK")
    return Path(base) if base else REPO_ROOT / "work" / profile


def figures_dir(profile: str) -> Path:
    """Where a profile's figures and tables are written (`$DERMLIB_FIGURES` overrides)."""
    base = os.environ.get("DERMLIB_FIGURES")
    return Path(base) if base else REPO_ROOT / "figures" / profile


def variant_name(profile: str, overrides: dict[str, Any]) -> str:
    """The scratch folder name of a run with `overrides`: the profile, each override as key=value (shortened,
    filename-safe) and a hash of them all, e.g. `demo-epochs=3_seeds=[0]-5f1c0a2e`; a URL's credentials are never
    part of it (`dermlib.redact`)."""
    if not overrides:
        return profile
    overrides = redact_overrides(overrides)
    text = json.dumps(overrides, sort_keys=True, default=str)
    words = "_".join(f"{k.rsplit('.', 1)[-1]}={json.dumps(v, default=str)}" for k, v in sorted(overrides.items()))
    safe = re.sub(r"[^A-Za-z0-9=.,_+\[\]-]+", "-", words).strip("-")[:48]
    return f"{profile}-{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def link_shared(scratch: str | Path, home: str | Path) -> None:
    """Make `scratch` a work dir whose data products are the `home` work dir's (symbolic links for SHARED_ENTRIES;
    the home's folders are created if absent): its results, records, executed notebooks and figures stay its own.
    Idempotent; an entry the scratch dir already holds as a real file or folder is left alone."""
    scratch, home = Path(scratch), Path(home)
    scratch.mkdir(parents=True, exist_ok=True)
    for name in SHARED_ENTRIES:
        target, link = home / name, scratch / name
        if not name.endswith(".parquet"):
            target.mkdir(parents=True, exist_ok=True)
        if not link.exists() and not link.is_symlink():
            link.symlink_to(target.resolve(), target_is_directory=not name.endswith(".parquet"))


class WorkDir:
    """The paths of one work dir; nothing is created or read here."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def of(cls, cfg: dict[str, Any]) -> WorkDir:
        """The work dir of a config (`cfg["work_dir"]`)."""
        return cls(cfg["work_dir"])

    def __repr__(self) -> str:
        return f"WorkDir({str(self.root)!r})"

    @property
    def manifest(self) -> Path:
        """`manifest.parquet`: the harmonised, partitioned manifest (notebook 01)."""
        return self.root / "manifest.parquet"

    @property
    def cache(self) -> Path:
        """`cache/`: the preprocessed uint8 image cache (`dermlib.data.build_cache`)."""
        return self.root / "cache"

    @property
    def notes_dir(self) -> Path:
        """`notes/`: the notes table and its audit."""
        return self.root / "notes"

    @property
    def notes(self) -> Path:
        """`notes/notes.parquet`: the long-format notes table (`dermlib.notes.store`)."""
        return self.notes_dir / "notes.parquet"

    @property
    def audit_flags(self) -> Path:
        """`notes/audit_flags.parquet`: the per-note audit flags, with the key of what they were made from."""
        return self.notes_dir / "audit_flags.parquet"

    @property
    def audit_summary(self) -> Path:
        """`notes/audit_summary.csv`: the notes' hallucination audit per strategy."""
        return self.notes_dir / "audit_summary.csv"

    @property
    def runs(self) -> Path:
        """`runs/`: one folder per trained run (`dermlib.train.runs.run_dir`)."""
        return self.root / "runs"

    @property
    def features(self) -> Path:
        """`features/`: cached outputs of frozen encoders (`dermlib.train.features`)."""
        return self.root / "features"

    @property
    def records(self) -> Path:
        """`records/`: the numbers each notebook records (`dermlib.notebook`)."""
        return self.root / "records"

    @property
    def datasets(self) -> Path:
        """`datasets/`: the default folder of each real source (`datasets/<source>`)."""
        return self.root / "datasets"

    @property
    def synthderm(self) -> Path:
        """`synthderm/`: the generated SynthDerm images and their raw manifest."""
        return self.root / "synthderm"

    @property
    def notebooks(self) -> Path:
        """`notebooks/`: executed notebooks of profiles other than the demo."""
        return self.root / "notebooks"

    @property
    def results(self) -> Path:
        """`results/`: everything the evaluation grid writes (`dermlib.evaluate.results`)."""
        return self.root / "results"

    @property
    def results_table(self) -> Path:
        """`results/results.parquet`: the tidy results table of the grid."""
        return self.results / "results.parquet"

    @property
    def prompts(self) -> Path:
        """`results/prompts.json`: the zero-shot prompts and concept phrases the runs were scored with."""
        return self.results / "prompts.json"

    def run_results(self, run_id: str) -> Path:
        """`results/runs/<run>.parquet`: one run's metric rows, cached with their evaluation key."""
        return self.results / "runs" / f"{run_id}.parquet"

    def samples(self, run_id: str) -> Path:
        """`results/samples/<run>.parquet`: one run's per-image values (what `dermlib.evaluate.stats` resamples)."""
        return self.results / "samples" / f"{run_id}.parquet"

    def embeddings(self, run_id: str) -> Path:
        """`results/embeddings/<run>.npz`: one run's pool embeddings, for the figures."""
        return self.results / "embeddings" / f"{run_id}.npz"

