"""Fixtures of the predict tests: one tiny SynthDerm work dir (two dermoscopic internal sources and one external, the
real preprocessed cache, template M notes), runs trained in it (M with separate and with shared projection heads,
and the image-only baseline), and the M run exported as a Hub model folder with a gallery of test embeddings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.fakes.workdirs import make_grid_work_dir, tiny_cfg


@pytest.fixture(scope="session")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 images per source at 32 px: every code path, quickly."""
    torch.set_num_threads(1)
    return make_grid_work_dir(tmp_path_factory.mktemp("predict"), n_per_source=12)


def _fit(work: Path, **train: object) -> Path:
    """A finished run of one epoch with these train settings (the last MiniLM layer trained)."""
    from dermlib.train.runs import fit

    return fit(tiny_cfg(work, epochs=1, **train))


@pytest.fixture(scope="session")
def m_run(work: Path) -> Path:
    """An M run with separate projection heads (the demo's)."""
    return _fit(work, strategy="M")


@pytest.fixture(scope="session")
def shared_run(work: Path) -> Path:
    """An M run whose image and text branches share one projection head (tensors that share memory)."""
    return _fit(work, strategy="M", projection="shared")


@pytest.fixture(scope="session")
def img_run(work: Path) -> Path:
    """The image-only baseline: no text branch, so no zero-shot, concepts or notes."""
    return _fit(work, strategy="Img")


@pytest.fixture(scope="session")
def exported(m_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The M run exported (`dermlib export`), with `embeddings_test.parquet` beside it."""
    from dermlib.evaluate.export import export_embeddings, export_run

    out = export_run(m_run, tmp_path_factory.mktemp("export") / "m")
    export_embeddings(out, "test", m_run)
    return out
