"""Fixtures of the training tests: one tiny SynthDerm work dir with template M notes, and one M run trained in it,
shared by every module of tests/train/ (each run folder is keyed by its config hash, so the tests share them safely)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.fakes.workdirs import make_work_dir, tiny_cfg


@pytest.fixture(scope="session")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 images per internal source at 32 px: enough to exercise every code path quickly."""
    torch.set_num_threads(1)
    return make_work_dir(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="session")
def m_run(work: Path) -> Path:
    """An M run of 3 epochs (the last MiniLM layer trained)."""
    from dermlib.train.runs import fit

    return fit(tiny_cfg(work, strategy="M", epochs=3))
