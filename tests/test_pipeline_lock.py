"""One pipeline per work dir, and executed notebooks replaced whole (dermlib.pipeline): real processes hold and ask for
`<work_dir>/.pipeline.lock`, a holder killed with SIGKILL lets the next one in, and a notebook run through papermill
that is killed mid-run leaves the previous executed notebook as it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

from dermlib.config import REPO_ROOT
from dermlib.pipeline import LOCK_NAME, PipelineBusy, execute, work_dir_lock

ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "OMP_NUM_THREADS": "1"}


def _python(code: str) -> subprocess.Popen:
    """A Python process running `code`, in its own process group (so a kill reaches a kernel it started)."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=ENV, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(check: Callable[[], bool], proc: subprocess.Popen, what: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert proc.poll() is None, f"{what}: the process ended first: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.02)


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _pipeline(work: Path, *argv: str, stub: bool = False) -> subprocess.CompletedProcess:
    """`python -m dermlib.pipeline --set work_dir=WORK ARGV` (with `stub`, the notebooks replaced by one line)."""
    run = (f"import dermlib.pipeline as p; p._run = lambda cfg, *a: print('ran in', cfg['work_dir']); "
           if stub else "import dermlib.pipeline as p; ")
    code = run + f"import sys; sys.exit(p.main(['--set', 'work_dir={work}', *{list(argv)!r}]))"
    return subprocess.run([sys.executable, "-c", code], env=ENV, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)


def test_a_second_pipeline_on_the_same_work_dir_refuses_at_once_and_a_killed_holder_lets_the_next_in(
        tmp_path: Path) -> None:
    work = tmp_path / "work"
    holder = _python(f"""
        import time
        from pathlib import Path
        from dermlib.pipeline import work_dir_lock
        with work_dir_lock(Path({str(work)!r})):
            print("held", flush=True)
            time.sleep(300)
    """)
    try:
        _wait_for(lambda: (work / LOCK_NAME).exists() and f"pid {holder.pid}" in (work / LOCK_NAME).read_text(),
                  holder, "the first pipeline takes the lock")
        start = time.monotonic()
        second = _pipeline(work)  # the real command line, notebooks and all
        assert second.returncode == 2, second.stderr[-3000:]
        assert time.monotonic() - start < 60  # refused at once, not after waiting for the holder
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
        message = lines[0]
        assert f"work dir {work} is in use by another pipeline (pid {holder.pid} on " in message
        assert "wait for it to finish" in message and "--set work_dir=<folder>" in message
        assert "== " not in second.stdout  # no notebook started
        with pytest.raises(PipelineBusy, match=f"pid {holder.pid}"):  # the same in-process (dermlib.pipeline.run)
            with work_dir_lock(work):
                pass
        assert _pipeline(tmp_path / "other", stub=True).returncode == 0  # another work dir is free meanwhile
    finally:
        _kill(holder)  # kill -9: the kernel drops its lock with the process
    after = _pipeline(work, stub=True)
    assert after.returncode == 0 and f"ran in {work}" in after.stdout, after.stderr[-3000:]
    with work_dir_lock(work) as lock:  # and this process may take it in turn; the file names the new holder
        assert f"pid {os.getpid()} on " in lock.read_text()


def _notebook(path: Path, code: str) -> Path:
    """A notebook with a parameters cell and one code cell."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = 'demo'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _outputs(path: Path) -> str:
    return json.dumps([c.get("outputs", []) for c in nbformat.read(path, as_version=4).cells])


def test_an_executed_notebook_is_replaced_whole_even_when_the_run_is_killed(tmp_path: Path) -> None:
    target = tmp_path / "executed" / "01_data.ipynb"
    target.parent.mkdir()
    execute(_notebook(tmp_path / "01_data.ipynb", "print('first run')"), target, {"profile": "demo"})
    assert "first run" in _outputs(target)
    assert nbformat.read(target, as_version=4).metadata["papermill"]["output_path"] == str(target)
    assert ".tmp" not in target.read_text()  # the temporary name papermill wrote to is nowhere in the notebook
    assert sorted(p.name for p in target.parent.iterdir()) == ["01_data.ipynb"]
    (tmp_path / "slow").mkdir()
    slow = _notebook(tmp_path / "slow" / "01_data.ipynb",
                     "print('second run', flush=True)\nimport time\ntime.sleep(300)")
    run = _python(f"""
        from pathlib import Path
        from dermlib.pipeline import execute
        execute(Path({str(slow)!r}), Path({str(target)!r}), {{"profile": "demo"}})
    """)
    temps = lambda: [p for p in target.parent.iterdir() if p.name.startswith(".01_data.")]  # noqa: E731
    try:
        # papermill writes the executed notebook as it goes: wait until the running cell is in it
        _wait_for(lambda: any("time.sleep" in p.read_text() for p in temps() if p.stat().st_size), run,
                  "papermill writes its temporary notebook")
    finally:
        _kill(run)
    assert temps() and "first run" in _outputs(target)  # the killed run never touched the notebook
    failing = _notebook(tmp_path / "failing.ipynb", "raise ValueError('cell failed on purpose')")
    import papermill

    with pytest.raises(papermill.PapermillExecutionError, match="cell failed on purpose"):
        execute(failing, target, {"profile": "demo"})
    assert "cell failed on purpose" in _outputs(target)  # a failed run's notebook shows its error, whole
    assert temps() == []  # the killed run's leftover went with the next write
