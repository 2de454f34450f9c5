"""Run the numbered notebooks in order through papermill (what `./run_all.sh` calls).

The plain demo profile executes the notebooks in place, so the committed notebooks show the SynthDerm run; other
profiles, the lab preset and any run with overrides write executed copies under `<work_dir>/notebooks/` (a variant's
work dir is a scratch folder: `dermlib.config.get_config`). Wall time per notebook is written
to `<figures_dir>/timings.csv`, and each executed notebook is rendered to static HTML under `<figures_dir>/html/`
(figures embedded) for readers without Jupyter.

While a notebook runs, the terminal (or nohup's / SLURM's log) shows its cells' outputs as they come (papermill's
`log_output`) and dermlib's own log lines, one per training epoch among them, which the kernel writes to
`<work_dir>/logs/pipeline.log` (`dermlib.logs`), never into the notebook.

One pipeline at a time per work dir: a run holds `<work_dir>/.pipeline.lock` (`work_dir_lock`), and a second one on
the same work dir stops at once, naming the holder. Executed notebooks, like every result file, are written to a
temporary file and renamed into place (`dermlib.atomic`): a killed run leaves the previous notebook whole.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd

from dermlib.atomic import atomic_path, write_csv, write_text
from dermlib.config import REPO_ROOT, add_cli_arguments, config_from_cli, get_config
from dermlib.logs import LOG_ENV, LogTail
from dermlib.notebook import write_reference
from dermlib.progress import progress_enabled
from dermlib.redact import redact_overrides
from dermlib.workdir import WorkDir

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
LOCK_NAME = ".pipeline.lock"


class PipelineBusy(RuntimeError):
    """Another pipeline holds this work dir's lock."""


def notebooks() -> list[Path]:
    """The numbered notebooks (`NN_<step>.ipynb`), in run order."""
    found = sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no numbered notebooks in {NOTEBOOK_DIR}")
    return found


def relative_paths(executed: Path, output: Path | None = None) -> None:
    """Papermill records where it read and wrote a notebook; keep those paths relative to the repository (`output`:
    where the notebook is published when `executed` is a temporary file)."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    meta = nb.metadata.get("papermill", {})
    if output is not None and "output_path" in meta:
        meta["output_path"] = str(output)
    for key in ("input_path", "output_path"):
        path = Path(meta.get(key) or "")
        if path.is_absolute() and path.is_relative_to(REPO_ROOT):
            meta[key] = str(path.relative_to(REPO_ROOT))
    nbformat.write(nb, executed)


def render_html(executed: list[Path], out_dir: Path) -> list[Path]:
    """Executed notebooks -> self-contained HTML pages (nbconvert, images inline, no code hidden)."""
    from nbconvert import HTMLExporter

    out_dir.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    pages = []
    for nb in executed:
        body, _ = exporter.from_filename(str(nb))
        pages.append(write_text(out_dir / f"{nb.stem}.html", body))
    return pages


def _show_cell_outputs() -> None:
    """Papermill's log (its cells' outputs, with `log_output`) on stdout, unless the caller configured logging."""
    logger = logging.getLogger("papermill")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("   | %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


@contextmanager
def work_dir_lock(work_dir: Path) -> Iterator[Path]:
    """Hold `<work_dir>/.pipeline.lock` (an exclusive `fcntl.flock`, which also holds the holder's pid) for the block.
    Held elsewhere: PipelineBusy at once, naming the work dir, the holder and the ways on. The lock goes with the
    process however it ends (exit, crash, kill -9); the file stays."""
    try:
        import fcntl
    except ImportError:  # no flock on this system (Windows): no lock
        yield work_dir / LOCK_NAME
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "one that has not written its pid yet"
            raise PipelineBusy(f"work dir {work_dir} is in use by another pipeline ({holder}; lock {path}): wait for "
                               f"it to finish, or run this one in another work dir with --set work_dir=<folder>"
                               ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                  .encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the only descriptor drops the flock


def execute(notebook: Path, target: Path, parameters: dict) -> None:
    """Run `notebook` through papermill into `target` by way of a temporary file beside it, renamed into place when
    papermill ends (`dermlib.atomic`): a killed run leaves the previous `target` whole. A notebook whose cell raised
    still replaces it, so its error shows where the notebook is read, and the error is raised again."""
    import papermill as pm

    failed = None
    with atomic_path(target) as tmp:
        try:
            pm.execute_notebook(
                str(notebook), str(tmp), parameters=parameters,
                cwd=str(NOTEBOOK_DIR), kernel_name="python3", log_output=True,  # cell outputs as they come
                progress_bar=progress_enabled(),  # papermill's tqdm over the cells, on a terminal only
            )
        except pm.PapermillExecutionError as err:
            if not tmp.exists():
                raise
            failed = err
        relative_paths(tmp, target)
    if failed is not None:
        raise failed


@contextmanager
def kernel_log(path: Path) -> Iterator[Path]:
    """Kernels started inside the block log dermlib's lines to `path` (`$DERMLIB_LOG`), printed here as they come."""
    before = os.environ.get(LOG_ENV)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.environ[LOG_ENV] = str(path)
    try:
        with LogTail(path):
            yield path
    finally:
        if before is None:
            os.environ.pop(LOG_ENV, None)
        else:
            os.environ[LOG_ENV] = before


def run(profile: str = "demo", only: str | None = None, parameters: dict | None = None,
        overrides: dict | None = None) -> pd.DataFrame:
    """Execute the notebooks of a profile (or the one whose number is `only`) with config `overrides` (checked
    here, before anything runs); return wall times. Holds the work dir's lock throughout (`work_dir_lock`)."""
    cfg = get_config(profile, overrides)
    with work_dir_lock(Path(cfg["work_dir"])):
        return _run(cfg, profile, only, parameters, overrides)


def _run(cfg: dict, profile: str, only: str | None, parameters: dict | None, overrides: dict | None) -> pd.DataFrame:
    """`run` once the work dir is this process's."""
    chosen = [nb for nb in notebooks() if only is None or nb.name.startswith(f"{int(only):02d}_")]
    if not chosen:
        raise ValueError(f"no notebook numbered {only!r}; have {[nb.name for nb in notebooks()]}")
    # only the plain demo rewrites the committed notebooks; a variant's go to its scratch work dir (dermlib.workdir)
    plain = profile == "demo" and not overrides
    out_dir = NOTEBOOK_DIR if plain else WorkDir.of(cfg).notebooks
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    _show_cell_outputs()
    for nb in chosen:
        print(f"== {nb.name} (profile {profile})", flush=True)
        start = time.perf_counter()
        with kernel_log(Path(cfg["work_dir"]) / "logs" / "pipeline.log"):
            # a URL's credentials never reach the notebook: the kernel inherits them (dermlib.redact)
            execute(nb, out_dir / nb.name,
                    {"profile": profile, **({"overrides": redact_overrides(overrides)} if overrides else {}),
                     **(parameters or {})})
        rows.append({"notebook": nb.name, "profile": profile, "seconds": round(time.perf_counter() - start, 1)})
        print(f"   done in {rows[-1]['seconds']} s", flush=True)
    fig_dir = Path(cfg["figures_dir"])
    pages = render_html([out_dir / nb.name for nb in chosen], fig_dir / "html")
    print("== HTML:", ", ".join(str(p.relative_to(REPO_ROOT) if p.is_relative_to(REPO_ROOT) else p) for p in pages))
    timings = pd.DataFrame(rows)
    if only is None:
        fig_dir.mkdir(parents=True, exist_ok=True)
        write_csv(timings, fig_dir / "timings.csv", index=False)
        if plain:  # the numbers the notebooks' self-checks compare a student's run with
            write_reference(cfg["work_dir"], fig_dir)
    print(timings.to_string(index=False))
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_cli_arguments(parser)
    parser.add_argument("--only", default=None, help="notebook number, e.g. 03")
    args = parser.parse_args(argv)
    if args.only is not None and not (args.only.isdigit() and any(nb.name.startswith(f"{int(args.only):02d}_")
                                                                   for nb in notebooks())):
        parser.error(f"--only takes a notebook number, one of {[nb.name[:2] for nb in notebooks()]}; got {args.only!r}")
    _, overrides = config_from_cli(parser, args)
    try:
        run(args.profile, args.only, overrides=overrides)
    except PipelineBusy as err:
        print(f"{parser.prog}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
