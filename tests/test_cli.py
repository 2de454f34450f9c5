"""The `dermlib` command (dermlib.cli): one subcommand per step, each running that step's own command line."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dermlib.cli import COMMANDS, main
from dermlib.config import REPO_ROOT


def test_every_subcommand_runs_its_steps_command_line(capsys: pytest.CaptureFixture) -> None:
    extras = {"dermlib.predict.app": "gradio"}  # a command of an optional extra imports where the extra is installed
    assert all(callable(importlib.import_module(module).main) for module in COMMANDS.values()
               if importlib.util.find_spec(extras.get(module, "dermlib")) is not None)
    with pytest.raises(SystemExit) as stop:
        main(["train", "--set", "train.batch_size=0"])  # the train step's own argument check answers
    assert stop.value.code == 2 and "must be greater than 0" in capsys.readouterr().err
    assert main(["bogus"]) == 2 and "choose one of run, data, notes" in capsys.readouterr().err
    assert main([]) == 2 and "dermlib export RUN OUT" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main(["predict", "lesion.jpg"])  # the predict step's own argument check answers, under its command's name
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == ("dermlib predict: error: the following arguments are "
                                                       "required: --model")
    assert main(["--help"]) == 0


def test_the_console_entry_point_is_declared_and_installed() -> None:
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"dermlib": "dermlib.cli:main"}
    beside = Path(sys.executable).parent / "dermlib"  # where pip put it for this interpreter, on PATH or not
    found = str(beside) if beside.exists() else shutil.which("dermlib")
    if found is None:
        pytest.skip("the dermlib command is not installed in this environment (pip install -e . makes it)")
    done = subprocess.run([found, "bogus"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unknown command 'bogus'" in done.stderr
