"""The `dermlib` command (dermlib.cli): one subcommand per step, each running that step's own command line."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import tomllib

import pytest

from dermlib.cli import COMMANDS, main
from dermlib.config import REPO_ROOT


def test_every_subcommand_runs_its_steps_command_line(capsys: pytest.CaptureFixture) -> None:
    assert all(callable(importlib.import_module(module).main) for module in COMMANDS.values())
    with pytest.raises(SystemExit) as stop:
        main(["train", "--set", "train.batch_size=0"])  # the train step's own argument check answers
    assert stop.value.code == 2 and "must be greater than 0" in capsys.readouterr().err
    assert main(["bogus"]) == 2 and "choose one of run, data, notes" in capsys.readouterr().err
    assert main([]) == 2 and "dermlib export RUN OUT" in capsys.readouterr().out
    assert main(["--help"]) == 0


def test_the_console_entry_point_is_declared_and_installed() -> None:
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"dermlib": "dermlib.cli:main"}
    found = shutil.which("dermlib")
    if found is None:
        pytest.skip("the dermlib command is not installed in this environment (pip install -e . makes it)")
    done = subprocess.run([found, "bogus"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unknown command 'bogus'" in done.stderr
