"""The worked solutions of the exercises (notebooks/solutions/): one section per exercise of every numbered notebook,
each with code that checks its answer and the answer in words, committed without outputs; and each solutions notebook
runs end to end after the tiny pipeline, leaving the checkout as it was."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dermlib.config import REPO_ROOT
from dermlib.pipeline import notebooks

SOLUTIONS = REPO_ROOT / "notebooks" / "solutions"
NUMBERED = notebooks()
IDS = [nb.stem for nb in NUMBERED]
HEADING = re.compile(r"^### Exercise (\d+)\s*$", re.M)


def solution_of(numbered: Path) -> Path:
    """`notebooks/solutions/<NN_step>_solutions.ipynb` for `notebooks/<NN_step>.ipynb`."""
    return SOLUTIONS / f"{numbered.stem}_solutions.ipynb"


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def exercise_count(numbered: Path) -> int:
    """How many numbered exercises the closing "## Exercises" cell of a notebook lists."""
    closing = _source(_cells(numbered)[-1])
    assert closing.lstrip().startswith("## Exercises"), f"{numbered.name} does not end with its exercises"
    return len(re.split(r"^\d\. ", closing, flags=re.M)[1:])


def _status() -> str:
    return subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=all"],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("nb", NUMBERED, ids=IDS)
def test_every_exercise_has_a_worked_solution(nb: Path) -> None:
    solution = solution_of(nb)
    assert solution.exists(), f"{solution.relative_to(REPO_ROOT)} is missing: every numbered notebook has its solutions"
    cells = _cells(solution)
    opening = _source(cells[0])
    assert cells[0]["cell_type"] == "markdown" and f"after notebook {nb.name[:2]}" in opening and "`lab`" in opening
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{solution.name}: one tagged parameters cell"
    lines = _source(params[0]).splitlines()
    assert [re.match(r"^(\w+)\s*=", line).group(1) for line in lines] == ["profile", "overrides"]
    assert lines[0].startswith('profile = "lab"') and lines[1].startswith("overrides = {}")
    assert all("#" in line for line in lines), f"{solution.name}: every parameter is documented with a comment"
    for i, cell in enumerate(cells):  # committed without outputs
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, f"{solution.name} cell {i} has outputs"
    starts = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and HEADING.search(_source(c))]
    numbers = [int(HEADING.search(_source(cells[i])).group(1)) for i in starts]
    assert numbers == list(range(1, exercise_count(nb) + 1)), f"{solution.name}: sections {numbers}"
    for number, (start, end) in enumerate(zip(starts, [*starts[1:], len(cells)]), 1):
        section = cells[start + 1:end]
        code = [_source(c) for c in section if c["cell_type"] == "code"]
        assert code and any(re.search(r"^\s*assert ", c, re.M) for c in code), \
            f"{solution.name}, exercise {number}: code that checks the answer"
        assert section[-1]["cell_type"] == "markdown" and _source(section[-1]).startswith("**Answer.**"), \
            f"{solution.name}, exercise {number}: the answer in words closes the section"


@pytest.mark.slow
@pytest.mark.parametrize("nb", NUMBERED, ids=IDS)
def test_solutions_run_after_the_tiny_pipeline(nb: Path, tiny_pipeline) -> None:
    """Each solutions notebook runs with the tiny parameters on the tiny pipeline's outputs (every assert in it
    holds there) and writes nothing into the checkout: its variants go to scratch folders, never to a committed file."""
    tiny_pipeline.run("05")
    checkout = shutil.which("git") is not None and (REPO_ROOT / ".git").exists()
    before = _status() if checkout else ""
    executed = tiny_pipeline.execute(solution_of(nb))
    errors = [o for c in _cells(executed) for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors[0].get("evalue") if errors else ""
    if checkout:
        assert _status() == before, "running the solutions changed the checkout"
