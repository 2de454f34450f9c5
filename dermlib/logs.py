"""Log lines a person can follow while a long step runs: dermlib's loggers (`dermlib.*`; one line per epoch from
`dermlib.train`) into a file the pipeline names, and that file followed on the pipeline's terminal.

`dermlib.pipeline` sets `$DERMLIB_LOG` for the notebook kernels it starts; importing dermlib there sends every
INFO line of `dermlib.*` to that file (`log_to_file`), never into the notebook's outputs, and the pipeline prints
the file's new lines as they come (`LogTail`), on a terminal or under nohup/SLURM alike. A CLI logs to stderr
(`log_to_stderr`). Without either, dermlib logs as any library: warnings only, through the root logger.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

LOG_ENV = "DERMLIB_LOG"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_FILE_HANDLER_NAME = "dermlib-log-file"


def log_to_file(path: str | Path) -> None:
    """INFO and above of `dermlib.*` appended to `path` only; warnings still reach stderr (a notebook shows them as
    before), INFO lines never do. Idempotent (one file handler)."""
    root = logging.getLogger("dermlib")
    if any(h.get_name() == _FILE_HANDLER_NAME for h in root.handlers):
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.set_name(_FILE_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    warnings_out = logging.StreamHandler(sys.stderr)  # what the root logger would have shown
    warnings_out.setLevel(logging.WARNING)
    warnings_out.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.addHandler(warnings_out)
    root.setLevel(logging.INFO)
    root.propagate = False  # INFO lines stay out of the notebook's root handler


def log_to_file_from_env() -> None:
    """`log_to_file($DERMLIB_LOG)` when the variable is set (a kernel the pipeline started)."""
    path = os.environ.get(LOG_ENV)
    if path:
        log_to_file(path)


def log_to_stderr(level: int = logging.INFO) -> None:
    """A CLI's logging: `dermlib.*` at `level` to stderr (a terminal, or nohup's file), unless already configured."""
    root = logging.getLogger("dermlib")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(level)
        root.propagate = False


class LogTail:
    """Prints the lines appended to `path` to `out` every `interval` seconds while the block runs (and the rest at
    its end): a context manager, in a daemon thread."""

    def __init__(self, path: str | Path, out: TextIO | None = None, prefix: str = "   ", interval: float = 1.0) -> None:
        self.path, self.out, self.prefix, self.interval = Path(path), out or sys.stdout, prefix, interval
        self._offset = self.path.stat().st_size if self.path.exists() else 0  # only what is new
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="dermlib-log-tail")

    def __enter__(self) -> LogTail:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._emit(final=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._emit()

    def _emit(self, final: bool = False) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        end = len(chunk) if final else chunk.rfind(b"\n") + 1  # whole lines only, until the end
        if end <= 0:
            return
        self._offset += end
        for line in chunk[:end].decode("utf-8", "replace").splitlines():
            self.out.write(f"{self.prefix}{line}\n")
        self.out.flush()
