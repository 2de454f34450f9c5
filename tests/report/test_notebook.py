"""Notebook 05 (report): what it imports from dermlib loads no torch (it reads `results/` alone), and end to end
under papermill with tiny parameters it rebuilds every table and figure from what notebook 04 measured."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dermlib.config import REPO_ROOT
from dermlib.notebook import read_records
from dermlib.report import tables

NOTEBOOK = REPO_ROOT / "notebooks" / "05_report.ipynb"


def notebook_modules(notebook: Path) -> list[str]:
    """The dermlib modules a notebook's code cells import (`from dermlib.a import b` is dermlib.a.b where that is a
    module, else dermlib.a; `import dermlib.a` is dermlib.a)."""
    code = "\n".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code")
    found = set(re.findall(r"^\s*import (dermlib[\w.]*)", code, re.M))
    imports = re.findall(r"^\s*from (dermlib[\w.]*) import \(([^)]*)\)", code, re.M)  # names in parentheses
    imports += re.findall(r"^\s*from (dermlib[\w.]*) import ([\w, ]+)$", code, re.M)
    for package, names in imports:
        for name in filter(None, re.split(r"[,\s]+", names)):
            module = f"{package}.{name}"
            found.add(module if (REPO_ROOT / f"{module.replace('.', '/')}.py").exists() else package)
    return sorted(found)


def test_the_report_notebook_imports_no_torch() -> None:
    modules = notebook_modules(NOTEBOOK)
    assert {"dermlib.report.tables", "dermlib.report.plots", "dermlib.evaluate.results"} <= set(modules), modules
    code = (f"import sys; import {', '.join(modules)}; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.slow
def test_notebook_05_rebuilds_tables_and_figures(tiny_pipeline) -> None:
    tiny_pipeline.run("05")
    rec = read_records(tiny_pipeline.work_dir, "05_report")
    figures = Path(tiny_pipeline.figures_dir)
    for name in ("05_kappa_internal_external", "05_retrieval_map", "05_paired_cosine", "05_embedding_map",
                 "05_retrieval_gallery", "05_retrieval_failure"):
        assert f"{name}.png" in rec["figures"] and (figures / f"{name}.pdf").exists()
    assert "05_hallucination_audit.png" in rec["figures"]  # from notes/audit_summary.csv (notebook 02 writes it)
    assert (Path(tiny_pipeline.work_dir) / "notes" / "audit_summary.csv").exists()
    assert {f"{t}.{ext}" for t in tables.TABLES for ext in ("csv", "md", "tex")} <= set(rec["tables"])
    # The report notebook reports exactly what notebook 04 measured, read back from the results table.
    assert rec["kappa_internal"] == pytest.approx(read_records(tiny_pipeline.work_dir, "04_evaluate")["kappa_internal"])
    table2 = pd.read_csv(figures / "table2_kappa.csv").set_index(["partition", "source"])
    for strategy, value in rec["kappa_internal"].items():
        assert table2.loc[("internal", "pooled"), f"ours: {strategy}"] == pytest.approx(value, abs=1e-4)
    assert all(-1 <= v <= 1 for v in rec["mean_paired_cosine"].values())
    assert "SynthDerm (synthetic) results" in (figures / "table5_paired_cosine.md").read_text()
