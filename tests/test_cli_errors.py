"""A command line given a work dir without the inputs it reads, a damaged one, or a bad strategy ends in one line
naming the problem and the fix, exit status 2, never a traceback: real `python -m` processes, run side by side."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dermlib.config import REPO_ROOT

ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "OMP_NUM_THREADS": "1"}


def _run_all(commands: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess]:
    """Run every `python ARGS` at once (they spend their time importing); name -> finished process."""
    procs = {name: subprocess.Popen([sys.executable, *args], env=ENV, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name, args in commands.items()}
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


def _error_line(result: subprocess.CompletedProcess) -> str:
    """The one error line of a failed command (argparse's usage lines above it allowed)."""
    assert result.returncode == 2, f"{result.args}: exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_missing_or_damaged_inputs_and_bad_strategies_end_in_one_line(tmp_path: Path) -> None:
    empty, damaged = tmp_path / "empty", tmp_path / "damaged"
    (damaged / "results").mkdir(parents=True)
    (damaged / "results" / "results.parquet").write_bytes(b"PAR1 half a table")  # a copy cut short
    cpu = ["--set", "train.device=cpu"]
    results = _run_all({
        "train, no work dir": ["-m", "dermlib.train", "--set", f"work_dir={empty}", *cpu],
        "dermlib train, bad strategy": ["-m", "dermlib.cli", "train", "--set", "train.strategy=P9", *cpu],
        "findings, no work dir": ["-m", "dermlib.report.findings", "--set", f"work_dir={empty}"],
        "findings, damaged results": ["-m", "dermlib.report.findings", "--set", f"work_dir={damaged}"],
        "findings, bad strategy": ["-m", "dermlib.report.findings", "--set", 'eval.strategies=["Img","P9"]'],
    })
    line = _error_line(results["train, no work dir"])
    assert line == (f"python -m dermlib.train: error: {empty}/manifest.parquet does not exist: run notebook 01_data "
                    f"(./run_all.sh --only 01) first")
    assert results["train, no work dir"].stderr.strip() == line  # one line, nothing else
    assert "unknown strategy 'P9'" in _error_line(results["dermlib train, bad strategy"])
    line = _error_line(results["findings, no work dir"])
    assert results["findings, no work dir"].stderr.strip() == line
    assert f"{empty}/results/results.parquet does not exist: run the grid in notebook 04_evaluate" in line
    line = _error_line(results["findings, damaged results"])
    assert results["findings, damaged results"].stderr.strip() == line
    assert f"{damaged}/results/results.parquet cannot be read (" in line and "truncated or corrupt" in line
    assert "run notebook 04_evaluate again (./run_all.sh --only 04)" in line
    assert "unknown strategy 'P9'" in _error_line(results["findings, bad strategy"])
    assert not empty.exists() or not any(empty.rglob("*.parquet"))  # nothing half-made on the way out


def test_every_dermlib_command_prints_a_missing_or_damaged_file_as_one_line(tmp_path: Path, capsys) -> None:
    """`dermlib <command>` and `python -m dermlib.train` run their step through `file_errors_in_one_line`."""
    from dermlib.atomic import file_errors_in_one_line
    from dermlib.data.schema import read_manifest

    damaged = tmp_path / "manifest.parquet"
    damaged.write_bytes(b"PAR1 half a manifest")
    assert file_errors_in_one_line(lambda argv: read_manifest(damaged), "dermlib train", []) == 2
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and line.startswith(f"dermlib train: error: {damaged} cannot be read (")
    assert "run notebook 01_data again (./run_all.sh --only 01)" in line
    assert file_errors_in_one_line(lambda argv: read_manifest(tmp_path / "none.parquet"), "prog", []) == 2
    assert capsys.readouterr().err.startswith(f"prog: error: {tmp_path}/none.parquet does not exist: run notebook")
    assert file_errors_in_one_line(lambda argv: 0, "prog") == 0
