"""The dataset doctor (`python -m dermlib.data doctor`): found, missing and broken sources, each with its fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dermlib.data import SOURCES, load_source
from tests.fakes.layouts import build


@pytest.mark.slow
def test_doctor_reports_found_missing_and_broken_sources(fake_samples: Path, fake_metadata: Path,
                                                        tmp_path: Path) -> None:
    broken = tmp_path / "ph2"
    broken.mkdir()  # a folder without the workbook
    clinic = build("derm7pt_clinic", fake_metadata, tmp_path / "derm7pt")  # meta.csv leaves one without photo
    sets = [f"data.roots.ham10000={fake_samples / 'HAM10000'}", f"data.roots.ph2={broken}",
            f"data.roots.pad_ufes_20={fake_samples / 'PAD-UFES-20'}", f"data.roots.derm7pt_clinic={clinic}"]
    args = [sys.executable, "-m", "dermlib.data", "doctor", "--profile", "paper"]
    for item in sets:
        args += ["--set", item]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DERMLIB_WORK": str(tmp_path / "work")})
    assert done.returncode == 1, done.stderr
    out = done.stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:13]}
    ham = load_source("ham10000", fake_samples / "HAM10000")
    assert rows["ham10000"][1] == "ok" and int(rows["ham10000"][3]) == len(ham) == 8
    assert int(rows["ham10000"][5]) == int((ham["label"] == "MEL").sum())  # the MEL column
    assert rows["ph2"][1] == "broken" and rows["bcn20000"][1] == "missing"
    assert "ph2 (PH2): broken:" in out and SOURCES["ph2"].homepage in out
    assert rows["derm7pt_clinic"][1] == "ok" and int(rows["derm7pt_clinic"][4]) == 0
    assert "--set data.roots.bcn20000=" in out and "3 of 12 sources ready" in out
    bad = subprocess.run([sys.executable, "-m", "dermlib.data", "doctor", "--set", "data.roots.hamm=/x"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a dataset" in bad.stderr and "Traceback" not in bad.stderr
