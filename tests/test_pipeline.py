"""The pipeline (dermlib.pipeline): a run with overrides executes the real notebooks into its scratch work dir and
leaves every tracked file of the checkout as it was."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dermlib.workdir import REPO_ROOT


def _status() -> str:
    return subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=all"],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
def test_a_run_with_overrides_leaves_the_checkout_as_it_was(monkeypatch, tmp_path) -> None:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to compare")
    from dermlib.config import get_config
    from dermlib.pipeline import run

    monkeypatch.delenv("DERMLIB_FIGURES", raising=False)  # the repository's own figures folder, as for a user
    monkeypatch.setenv("DERMLIB_WORK", str(tmp_path / "work"))
    overrides = {"data.n_per_source": 6, "data.image_size": 32, "data.synth_image_size": 64}
    before = _status()
    timings = run("demo", only="01", overrides=overrides)
    assert _status() == before  # no tracked file changed, no untracked file appeared in the checkout
    cfg = get_config("demo", overrides)
    scratch = Path(cfg["work_dir"])
    assert scratch.parent == tmp_path / "work" / "scratch" and list(timings["notebook"]) == ["01_data.ipynb"]
    assert (scratch / "notebooks" / "01_data.ipynb").exists() and (scratch / "manifest.parquet").exists()
    assert (Path(cfg["figures_dir"]) / "html" / "01_data.html").exists()
    assert any(Path(cfg["figures_dir"]).glob("01_*.png"))
