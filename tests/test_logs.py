"""dermlib.logs and the pipeline's use of it: a kernel's INFO lines go to the log file only (never into the
notebook), warnings still to stderr, and the pipeline prints the file's new lines as they come."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from dermlib.logs import LOG_ENV, LogTail


def test_a_kernel_logs_info_to_the_file_and_only_warnings_to_stderr(tmp_path: Path) -> None:
    """As a notebook kernel the pipeline started: $DERMLIB_LOG set before dermlib is imported, the root logger at
    WARNING (dermlib.notebook.setup)."""
    log = tmp_path / "logs" / "pipeline.log"
    code = ("import logging; logging.basicConfig(level=logging.WARNING); import dermlib; "
            "t = logging.getLogger('dermlib.train'); t.info('M-seed0-abc epoch 1/3: train_loss 1.0'); "
            "t.warning('text encoder x: weights missing'); logging.getLogger('other').info('not ours')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, LOG_ENV: str(log)})
    text = log.read_text()
    assert "dermlib.train: M-seed0-abc epoch 1/3: train_loss 1.0" in text and "weights missing" in text
    assert "not ours" not in text
    assert "epoch" not in out.stderr + out.stdout  # the notebook's outputs stay clean
    assert out.stderr.strip() == "WARNING dermlib.train: text encoder x: weights missing"


def test_log_tail_prints_whole_new_lines_as_they_come(tmp_path: Path) -> None:
    path = tmp_path / "run.log"
    path.write_text("an older line\n")
    out = io.StringIO()
    with LogTail(path, out, prefix="> ", interval=0.05):
        with path.open("a") as f:
            f.write("epoch 1\nepoch 2 (half")
            f.flush()
            time.sleep(0.3)
            assert out.getvalue() == "> epoch 1\n"  # only whole lines while it runs
            f.write(" done)\n")
    assert out.getvalue() == "> epoch 1\n> epoch 2 (half done)\n"


def test_the_pipeline_sets_the_log_for_its_kernels_only(tmp_path: Path, monkeypatch) -> None:
    from dermlib.pipeline import kernel_log

    monkeypatch.delenv(LOG_ENV, raising=False)
    with kernel_log(tmp_path / "logs" / "pipeline.log") as path:
        assert os.environ[LOG_ENV] == str(path) and path.parent.is_dir()
    assert LOG_ENV not in os.environ


def test_the_pipeline_shows_kernel_log_lines_and_keeps_them_out_of_the_notebook(tmp_path: Path, monkeypatch,
                                                                                capsys) -> None:
    """A notebook run by the pipeline: its `dermlib.train` lines reach the terminal (and the log file) as they
    come, beside the cells' outputs; the executed notebook holds the cell's own output only."""
    import nbformat

    from dermlib import pipeline

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("profile = 'demo'\noverrides = {}", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(
                    "import logging\nlogging.basicConfig(level=logging.WARNING)\nimport dermlib\n"
                    "for k in range(3):\n    logging.getLogger('dermlib.train').info('R-seed0 epoch %d/3', k + 1)\n"
                    "print('the cell speaks')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder = tmp_path / "notebooks"
    folder.mkdir()
    nbformat.write(nb, folder / "01_log.ipynb")
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", folder)
    monkeypatch.setattr(pipeline, "notebooks", lambda: [folder / "01_log.ipynb"])
    monkeypatch.setattr(pipeline, "_show_cell_outputs", lambda: None)  # pytest's handlers take papermill's log
    overrides = {"work_dir": str(tmp_path / "work")}
    pipeline.run("demo", overrides=overrides)
    shown = capsys.readouterr().out
    assert all(f"dermlib.train: R-seed0 epoch {k}/3" in shown for k in (1, 2, 3))
    assert "epoch" in (tmp_path / "work" / "logs" / "pipeline.log").read_text()
    executed = nbformat.read(tmp_path / "work" / "notebooks" / "01_log.ipynb", as_version=4)
    outputs = [out for cell in executed.cells for out in cell.get("outputs", [])]
    assert [out.get("text") for out in outputs] == ["the cell speaks\n"]  # no log line, no warning
