"""The committed, executed demo notebooks as a reader gets them: lessons framed, figures in view, clean outputs,
result sentences that agree with the results tables, and an HTML rendering that a real browser displays."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from dermlib.config import REPO_ROOT
from dermlib.pipeline import notebooks
from dermlib.report import findings

NOTEBOOKS = notebooks()
COMMITTED = REPO_ROOT / "figures" / "demo"  # what the last ./run_all.sh committed (not the tests' figures dir)
IDS = [nb.stem for nb in NOTEBOOKS]
ABSOLUTE_PATH = re.compile(r"(?<![\w.~])(?:/(?:work|home|root|tmp|Users|mnt|var|opt|private)/|[A-Z]:\\)")
LONG_FLOAT = re.compile(r"(?<![\d.])\d+\.\d{5,}")  # rounded numbers show at most 4 decimals
CITATION = re.compile(r"doi\.org/\S+|arXiv[ :]\d{4}\.\d{4,5}")  # identifiers, not numbers


def _cells(nb: Path) -> list[dict]:
    return json.loads(nb.read_text(encoding="utf-8"))["cells"]


def _text_outputs(cell: dict) -> list[str]:
    """Every text a reader sees in a cell's outputs (streams, plain text, HTML, Markdown, errors), not image data."""
    texts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            texts.append("".join(out["text"]))
        for kind in ("text/plain", "text/html", "text/markdown"):
            if kind in out.get("data", {}):
                texts.append("".join(out["data"][kind]))
        if out.get("output_type") == "error":
            texts.append(f"{out.get('ename')}: {out.get('evalue')}")
    return texts


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=IDS)
def test_each_notebook_is_a_lesson(nb: Path) -> None:
    cells = _cells(nb)
    opening = "".join(cells[0]["source"])
    for part in ("What you will learn", "You need", "Run time"):
        assert part in opening, f"{nb.name}: the first cell should say '{part}'"
    closing = "".join(cells[-1]["source"])
    assert cells[-1]["cell_type"] == "markdown" and closing.lstrip().startswith("## Exercises"), nb.name
    exercises = re.split(r"^\d\. ", closing, flags=re.M)[1:]
    assert 2 <= len(exercises) <= 4, f"{nb.name}: {len(exercises)} exercises"
    for number, exercise in enumerate(exercises, 1):
        assert "*Hint:*" in exercise, f"{nb.name}: exercise {number} has no hint"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=IDS)
def test_parameters_cell_exposes_knobs(nb: Path) -> None:
    cell = next(c for c in _cells(nb) if "parameters" in c.get("metadata", {}).get("tags", []))
    names = re.findall(r"^(\w+)\s*=", "".join(cell["source"]), re.M)
    assert {"profile", "overrides"} <= set(names) and len(names) >= 4, f"{nb.name}: parameters are only {names}"
    assert all("#" in line for line in "".join(cell["source"]).splitlines() if re.match(r"^\w+\s*=", line)), \
        f"{nb.name}: every knob in the parameters cell is documented with a comment"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=IDS)
def test_papermill_reads_every_knob_without_a_warning(nb: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import papermill as pm

    cell = next(c for c in _cells(nb) if "parameters" in c.get("metadata", {}).get("tags", []))
    names = re.findall(r"^(\w+)\s*=", "".join(cell["source"]), re.M)
    with caplog.at_level(logging.WARNING, logger="papermill"):
        found = pm.inspect_notebook(str(nb))
    assert list(found) == names, nb.name
    assert not [r.getMessage() for r in caplog.records if "Unable to parse" in r.getMessage()], nb.name


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=IDS)
def test_every_saved_figure_is_shown(nb: Path) -> None:
    for i, cell in enumerate(_cells(nb)):
        if cell["cell_type"] == "code" and re.search(r"\bsave\(", "".join(cell["source"])):
            images = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
            assert images, f"{nb.name} cell {i} saves a figure but shows none"
        for text in _text_outputs(cell):
            assert not re.fullmatch(r"\s*(Posix|Windows)?Path\(.*\)\s*", text), f"{nb.name} cell {i} shows a path"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=IDS)
def test_outputs_are_clean(nb: Path) -> None:
    papermill = json.loads(nb.read_text(encoding="utf-8"))["metadata"].get("papermill", {})
    for key in ("input_path", "output_path"):
        assert not ABSOLUTE_PATH.search(str(papermill.get(key, ""))), f"{nb.name} metadata {key}: {papermill[key]}"
    for i, cell in enumerate(_cells(nb)):
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{nb.name} cell {i} raised {out.get('ename')}"
            assert not (out.get("name") == "stderr" and "warn" in "".join(out.get("text", "")).lower()), \
                f"{nb.name} cell {i} prints a warning: {''.join(out.get('text', ''))[:200]}"
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                lines = "".join(out.get("text", "")).splitlines()
                assert len(lines) <= 40, f"{nb.name} cell {i} prints {len(lines)} lines (use a table or a progress bar)"
        for text in _text_outputs(cell):
            found = ABSOLUTE_PATH.search(text)
            assert not found, f"{nb.name} cell {i} shows an absolute path: ...{text[max(0, found.start() - 40):found.end() + 40]}"
            assert "Warning" not in text and not re.search(r"(?i)\bwarning:", text), f"{nb.name} cell {i} shows a warning"
            shown_text = re.sub(r"data:image/\w+;base64,[A-Za-z0-9+/=]+", "", text)  # embedded pictures are not numbers
            shown_text = CITATION.sub("", shown_text)
            found = LONG_FLOAT.search(shown_text)
            assert not found, f"{nb.name} cell {i} shows unrounded numbers: {found and found[0]}"


def _rendered_markdown(nb: Path, marker: str) -> list[str]:
    """The Markdown outputs of every code cell that calls `marker`, in order."""
    found = ["".join("".join(o["data"]["text/markdown"]) for o in cell.get("outputs", [])
                     if "text/markdown" in o.get("data", {}))
             for cell in _cells(nb) if cell["cell_type"] == "code" and marker in "".join(cell["source"])]
    assert found, f"{nb.name} has no cell calling {marker}"
    return found


def test_result_sentences_match_the_comparison_table() -> None:
    table = pd.read_csv(COMMITTED / "comparisons.csv")
    sentences = set(findings.answers(table)["sentence"])
    shown: set[str] = set()
    for nb in NOTEBOOKS:
        if "answers_markdown" in nb.read_text(encoding="utf-8"):
            rendered = _rendered_markdown(nb, "answers_markdown")
            for text in rendered:  # every answers cell gives a part of them, word for word
                bullets = [line[2:] for line in text.splitlines() if line.startswith("- ")]
                assert bullets and set(bullets) <= sentences, f"{nb.name}: {text[:200]}"
                shown |= set(bullets)
            if nb.name.startswith("04"):  # notebook 04 answers with the primary and control rows
                want = findings.answers_markdown(table, kinds=["primary", "control"])
                assert rendered[-1].strip() == want.strip(), f"{nb.name}: the answers cell gives the declared rows"
    declared = findings.answers(table)
    missing = set(declared.loc[declared["kind"] != "earlier-protocol", "sentence"]) - shown
    assert not missing, f"no notebook gives these answers (05 draws each beside its figure): {sorted(missing)[:2]}"
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for sentence in declared.loc[declared["kind"] != "earlier-protocol", "sentence"]:  # the README summarises those
        assert sentence in readme, f"README lacks (or has a stale copy of): {sentence}"
    assert findings.claims_markdown(table).strip() in readme and findings.earlier_summary(table).strip() in readme


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=IDS)
def test_a_claim_in_prose_is_followed_by_its_rendered_answer(nb: Path) -> None:
    """Prose may state the paper's claims; what this run says about one comes from the comparisons, right after."""
    cells = _cells(nb)
    for i, cell in enumerate(cells):
        text = "".join(cell["source"])
        if cell["cell_type"] != "markdown" or not re.search(r"claim \([abc]\)", text):
            continue
        assert "paper's claim" in text, f"{nb.name} cell {i} states a claim without saying it is the paper's"
        following = [c for c in cells[i + 1: i + 4] if c["cell_type"] == "code"]
        assert any("answers_markdown" in "".join(c["source"]) for c in following), \
            f"{nb.name} cell {i} states a claim, but no cell after it renders this run's answer from the comparisons"


def test_html_pages_exist_for_every_notebook() -> None:
    pages = COMMITTED / "html"
    for nb in NOTEBOOKS:
        page = pages / f"{nb.stem}.html"
        assert page.exists(), f"{page.relative_to(REPO_ROOT)} is missing: ./run_all.sh renders it"
        figures_in_nb = sum("image/png" in o.get("data", {}) for c in _cells(nb) for o in c.get("outputs", []))
        assert page.read_text(encoding="utf-8").count("data:image/png;base64") >= figures_in_nb


CHECK = """<script>window.addEventListener('load', () => { const im = [...document.images];
const d = document.createElement('pre'); d.id = 'dermlib-check';
d.textContent = JSON.stringify({images: im.length, decoded: im.filter(i => i.complete && i.naturalWidth > 0).length});
document.body.appendChild(d); });</script>"""


@pytest.mark.slow
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=IDS)
def test_html_figures_render_in_headless_chromium(nb: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium); .ci/run installs it")
    page = tmp_path / "page.html"
    page.write_text((COMMITTED / "html" / f"{nb.stem}.html").read_text(encoding="utf-8") + CHECK,
                    encoding="utf-8")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=8000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180).stdout
    found = re.search(r'id="dermlib-check">([^<]*)<', dom)
    assert found, "the browser did not run the page's check (no DOM came back)"
    counts = json.loads(found.group(1).replace("&quot;", '"'))
    assert counts["images"] > 0 and counts["decoded"] == counts["images"], f"{nb.name}: {counts}"
