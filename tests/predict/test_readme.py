"""The README's "Using a trained model" commands, run as written: its shell block (export, predict) through the
installed `dermlib` command and its Python block, with the placeholders (`work/demo/runs/<run>`, the image names)
replaced by a tiny trained run and two of its SynthDerm images."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dermlib.config import REPO_ROOT
from dermlib.data.schema import read_manifest


def _section_blocks() -> dict[str, list[str]]:
    """The fenced blocks of the README's "Using a trained model" section, by language."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## Using a trained model"):]
    section = section[:section.index("\n## ", 3)]
    blocks: dict[str, list[str]] = {}
    for language, body in re.findall(r"```(\w+)\n(.*?)```", section, re.S):
        blocks.setdefault(language, []).append(body)
    return blocks


def _command(line: str) -> list[str]:
    """One README shell line as arguments: the comment dropped, optional [..] parts kept without their brackets."""
    words = shlex.split(line.split("  #")[0].replace("[", "").replace("]", ""))
    script = Path(sys.executable).parent / "dermlib"  # the console entry point, where pip installed it
    return ([str(script)] if script.exists() else [sys.executable, "-m", "dermlib.cli"]) + words[1:]


def test_the_readme_commands_run_as_written(m_run: Path, work: Path, tmp_path: Path) -> None:
    blocks = _section_blocks()
    shell = [line for line in blocks["bash"][0].splitlines() if line.startswith("dermlib ")]
    assert [line.split()[1] for line in shell] == ["export", "predict", "app"]  # the app: tests/predict/test_app.py
    manifest = read_manifest(work / "manifest.parquet")
    images = manifest.loc[manifest["split"] == "test", "image_path"].head(2).tolist()
    shutil.copy(images[0], tmp_path / "lesion.jpg")  # a PNG's bytes under a .jpg name: decoded by content
    shutil.copy(images[1], tmp_path / "other.png")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for line in shell[:2]:
        args = [str(m_run) if a == "work/demo/runs/<run>" else a for a in _command(line)]
        done = subprocess.run(args + (["--json"] if "predict" in args else []), cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (line, done.stderr[-2000:])
    predicted = json.loads(done.stdout)
    assert [Path(p["image"]).name for p in predicted] == ["lesion.jpg", "other.png"]
    assert all(p["label"] and p["neighbours"] and p["error"] is None for p in predicted)
    assert (tmp_path / "my-model" / "model.safetensors").is_file()
    # the Python block, in the same folder: the same predictions
    cwd = Path.cwd()
    try:
        os.chdir(tmp_path)
        scope: dict = {}
        exec(blocks["python"][0], scope)  # noqa: S102  (the README's own lines)
    finally:
        os.chdir(cwd)
    (pred,) = scope["preds"]
    assert pred.label == predicted[0]["label"]
    assert pred.probabilities == pytest.approx(predicted[0]["probabilities"], abs=1e-6)
