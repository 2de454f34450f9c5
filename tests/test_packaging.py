"""dermlib as a built package: the wheel holds every file the package reads at run time, not only its Python, and,
installed into a fresh venv and run outside the clone, renders notes, trains, exports and predicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from dermlib.config import REPO_ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip wheel .` builds from this checkout (with the venv's own setuptools, offline, when it has one)."""
    out = tmp_path_factory.mktemp("wheel")
    try:
        import setuptools  # noqa: F401
        isolation = ["--no-build-isolation"]
    except ImportError:  # a clean build environment from the package registry
        isolation = []
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(out),
                           str(REPO_ROOT)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (built,) = out.glob("dermlib-*.whl")
    return built


@pytest.mark.slow  # builds a wheel (about half a minute)
def test_the_wheel_holds_every_file_of_the_package(wheel: Path) -> None:
    packaged = set(zipfile.ZipFile(wheel).namelist())
    package = REPO_ROOT / "dermlib"
    wanted = {str(p.relative_to(REPO_ROOT)) for p in package.rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    missing = sorted(wanted - packaged)
    assert not missing, f"not in the wheel: {missing} (add their pattern to [tool.setuptools.package-data])"
    assert "dermlib/notes/note_fields.csv" in packaged


# Run by the installed package from a folder outside the clone: template notes for a tiny SynthDerm, one short run,
# its export and a prediction on one of its images. tests/fakes (the clone's, last on sys.path) builds the work dir.
INSTALLED_PATH = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import dermlib
    from dermlib.workdir import REPO_ROOT
    assert "site-packages" in dermlib.__file__ and REPO_ROOT == Path.cwd().resolve(), (dermlib.__file__, REPO_ROOT)
    from dermlib.data.schema import read_manifest
    from dermlib.notes.store import save_notes
    from dermlib.notes.synth import synthesize
    from dermlib.train.runs import fit
    from dermlib.evaluate.export import export_run
    from dermlib.predict import DermModel, predict
    from tests.fakes.workdirs import make_work_dir, tiny_cfg
    work = make_work_dir(Path("home"), n_per_source=12, size=32)
    manifest = read_manifest(work / "manifest.parquet")
    notes = synthesize(manifest, "M")
    assert notes["status"].eq("ok").all() and notes["note"].str.len().gt(40).all()
    save_notes(notes, work)
    run = fit(tiny_cfg(work, strategy="M", epochs=1))
    export_run(run, "exported")
    model = DermModel.from_pretrained("exported")
    image = manifest["image_path"].iloc[0]
    (pred,) = predict(model, [image])
    assert abs(sum(pred.probabilities.values()) - 1) < 1e-5 and pred.synthetic
    print(json.dumps({"image": image, "label": pred.label}))
""")


@pytest.mark.slow  # a wheel, a venv and a short training run (about a minute)
def test_the_installed_wheel_renders_trains_exports_and_predicts_outside_the_clone(wheel: Path, tmp_path: Path
                                                                                   ) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                           "--no-index", str(wheel)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    # the dependencies are this environment's (not downloaded again): its site-packages, after the venv's own, and
    # the clone last (tests.fakes only: dermlib itself must come from the wheel)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "_dependencies.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n{REPO_ROOT}\n")
    home = tmp_path / "user"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERMLIB_") and k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run([str(python), "-c", INSTALLED_PATH], cwd=home, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = json.loads(done.stdout.strip().splitlines()[-1])
    assert (home / "home" / "work" / "runs").is_dir() and (home / "exported" / "model.safetensors").is_file()
    assert not (REPO_ROOT / "exported").exists()
    # the console entry point the wheel installed, as a user types it
    cli = subprocess.run([str(venv / "bin" / "dermlib"), "predict", expected["image"], "--model", "exported", "--json"],
                         cwd=home, env=env, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-2000:]
    (shown,) = json.loads(cli.stdout)
    assert shown["label"] == expected["label"] and shown["error"] is None


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
