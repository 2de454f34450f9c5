"""The two environment definitions (pip via pyproject.toml, conda via environment.yml) pin the same versions."""

import re
import tomllib

import pytest

from dermlib.config import REPO_ROOT, get_config


def test_environment_yml_pins_match_pyproject() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = set(project["dependencies"]) | {d for extra in project["optional-dependencies"].values() for d in extra}
    conda = set(re.findall(r"^\s+- ([\w\-\[\]]+==[\w.]+)\s*$", (REPO_ROOT / "environment.yml").read_text(), re.M))
    assert pins == conda, f"only in pyproject: {pins - conda}; only in environment.yml: {conda - pins}"
    assert all("==" in p for p in pins), "every dependency is pinned"


def test_config_overrides_and_errors() -> None:
    cfg = get_config("demo", {"train.epochs": 2})
    assert cfg["train"]["epochs"] == 2 and cfg["profile"] == "demo" and cfg["synthetic"] is True
    assert get_config("paper")["synthetic"] is False
    with pytest.raises(KeyError, match="epochz"):
        get_config("demo", {"train.epochz": 2})
    with pytest.raises(ValueError, match="unknown profile"):
        get_config("laptop")
