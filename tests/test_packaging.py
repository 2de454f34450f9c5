"""dermlib as a built package: the wheel holds every file the package reads at run time, not only its Python."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dermlib.config import REPO_ROOT


@pytest.mark.slow  # builds a wheel (about half a minute)
def test_the_wheel_holds_every_file_of_the_package(tmp_path: Path) -> None:
    try:
        import setuptools  # noqa: F401  (build with the venv's own, offline)
        isolation = ["--no-build-isolation"]
    except ImportError:  # a clean build environment from the package registry
        isolation = []
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(tmp_path),
                           str(REPO_ROOT)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("dermlib-*.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    package = REPO_ROOT / "dermlib"
    wanted = {str(p.relative_to(REPO_ROOT)) for p in package.rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    missing = sorted(wanted - packaged)
    assert not missing, f"not in the wheel: {missing} (add their pattern to [tool.setuptools.package-data])"
    assert "dermlib/notes/note_fields.csv" in packaged


def test_licence_and_citation_agree_with_the_package_and_the_readme() -> None:
    import tomllib

    import yaml

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and (REPO_ROOT / "LICENSE").read_text().startswith("MIT License")
    cff = yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["version"] == project["version"] and cff["license"] == "MIT"
    paper = cff["preferred-citation"]
    readme = (REPO_ROOT / "README.md").read_text()
    assert paper["identifiers"][0]["value"].removeprefix("arXiv:") in readme
    assert all(f"{a['family-names']} {a['given-names']}" in readme for a in paper["authors"])
