"""Shared fixtures: the invented stand-ins of the real dataset files (tests/fakes/layouts.py; the real ones, in
../shared, are found by tests/data/conftest.py), and a papermill runner for the notebooks with tiny parameters."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from dermlib.config import REPO_ROOT
from tests.fakes.layouts import build, write_fake_metadata, write_fake_samples

# nbval executes the committed notebooks in kernels that inherit this environment: keep their output
# (generated data, runs, figures) out of the repository.
_NBVAL_TMP = Path(tempfile.mkdtemp(prefix="dermlib-nbval-"))
os.environ.setdefault("DERMLIB_WORK", str(_NBVAL_TMP / "work"))
os.environ.setdefault("DERMLIB_FIGURES", str(_NBVAL_TMP / "figures"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED = Path(os.environ.get("DERMLIB_SHARED", REPO_ROOT.parent / "shared"))

# Tiny parameters for the notebook tests: every notebook takes `profile` and `overrides` (dotted config keys).
TINY_OVERRIDES: dict[str, object] = {
    "data.n_per_source": 12,
    "data.image_size": 32,
    "data.synth_image_size": 64,
    "train.epochs": 1,
    "train.batch_size": 16,
    "train.max_text_len": 48,
    "eval.bootstrap": 20,
    "eval.seeds": [0],
    # notes: a private cache (never the committed demo cache) and the local LLM on 3 samples per LLM strategy
    "notes.cache_path": "{work_dir}/notes/cache.sqlite",
    "train.note_features": None,  # nor the committed note store (it holds none of these notes)
    "notes.limit": 3,
    # zero-shot from LLM descriptions: one per (style, class), 24 local generations beside that private cache
    "eval.class_descriptions": 1,
    # every strategy (as the demo profile)
    "notes.strategies": ["M", "M+P1", "M+P2", "P3"],
    "eval.strategies": ["Img", "M", "M+P1", "M+P2", "P3"],
}


@pytest.fixture(scope="session")
def fake_metadata(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The invented stand-in for ../shared/datasets/metadata (tests/fakes/layouts.py)."""
    return write_fake_metadata(tmp_path_factory.mktemp("fake-metadata"))


@pytest.fixture(scope="session")
def fake_samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The invented stand-in for ../shared/datasets/real-samples (tests/fakes/layouts.py)."""
    return write_fake_samples(tmp_path_factory.mktemp("fake-samples"))


@pytest.fixture
def fake_root(fake_metadata: Path, tmp_path: Path) -> Callable[[str], Path]:
    """fake_root(name): a fresh dataset folder laid out as `name` is downloaded, from the fake metadata."""
    return lambda name: build(name, fake_metadata, tmp_path / "datasets" / name)


class TinyPipeline:
    """Runs the numbered notebooks once each, in order, with tiny parameters, in a private work dir."""

    def __init__(self, root: Path) -> None:
        self.work_dir = root / "work"
        self.figures_dir = root / "figures"
        self.out_dir = root / "executed"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._done: dict[str, Path] = {}

    def run(self, number: str) -> Path:
        """Execute notebooks up to and including `number` (e.g. "03"); return the executed notebook's path."""
        from dermlib.pipeline import notebooks

        target = None
        for nb in notebooks():
            prefix = nb.name[:2]
            if prefix not in self._done:
                self._done[prefix] = self.execute(nb)
            if prefix == number:
                target = self._done[prefix]
                break
        if target is None:
            raise ValueError(f"no notebook numbered {number}")
        return target

    def execute(self, notebook: Path) -> Path:
        """Execute one notebook (numbered, or another that reads their outputs, e.g. a solutions notebook) with the
        tiny parameters in this pipeline's work and figures dirs, from the notebook's own folder; return the
        executed copy's path."""
        import papermill as pm

        out = self.out_dir / notebook.name
        old = {k: os.environ.get(k) for k in ("DERMLIB_WORK", "DERMLIB_FIGURES")}
        os.environ["DERMLIB_WORK"], os.environ["DERMLIB_FIGURES"] = str(self.work_dir), str(self.figures_dir)
        try:
            pm.execute_notebook(str(notebook), str(out), parameters={"profile": "demo", "overrides": TINY_OVERRIDES},
                                cwd=str(notebook.parent), kernel_name="python3", progress_bar=False)
        finally:
            for k, v in old.items():
                os.environ[k] = v if v is not None else ""
        return out


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> TinyPipeline:
    return TinyPipeline(tmp_path_factory.mktemp("tiny-pipeline"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """nbval's re-execution of notebook 01 is an end-to-end run too: it belongs to the slow lane."""
    for item in items:
        if item.nodeid.endswith(".ipynb") or ".ipynb::" in item.nodeid:
            item.add_marker(pytest.mark.slow)
