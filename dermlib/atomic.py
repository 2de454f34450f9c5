"""Files a crash never leaves half-written, and reading them back with one clear error.

    with atomic_path(path) as tmp:          # write tmp any way you like; it replaces `path` only if the block ends
        torch.save(state, tmp)
    write_parquet(frame, path)              # the same for a table (and write_csv, write_text)
    frame = read_parquet(path, fix="run notebook 04_evaluate again (./run_all.sh --only 04)")
    sys.exit(file_errors_in_one_line(main, "python -m dermlib.train"))    # a command line's missing input: one line

A write goes to a temporary file beside its target, named after it, this host and this process and a random token
(`.results.<host>.<pid>.<hex>.tmp.parquet`), then `os.replace`s it: a reader (or two writers) sees the old file or
the new one, never part of one, and two processes never share a temporary name. A write that raises removes its
temporary file; one killed outright (kill -9) leaves it behind, and the next write to the same target removes the
leftovers of processes of this host that are gone. A target that is a symbolic link (a variant's link to its home's
file, `dermlib.workdir.link_shared`) is written through: the file it points at is replaced, the link stays. Nothing
is fsync'ed: this guards against a process that dies, not a machine that loses power.

Reading a table goes through `read_parquet`, whose one error names the file and what writes it again; a command
line run through `file_errors_in_one_line` prints such an error (or any missing file's) as one line, exit status 2.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is imported where a table is written or read
    import pandas as pd

HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


class CorruptFileError(ValueError):
    """A file dermlib wrote cannot be read back (truncated, corrupt, or not what dermlib writes there)."""


def temp_path(path: str | Path) -> Path:
    """A temporary name beside `path`, unique to this host, process and call, ending in `path`'s own suffix (so
    numpy, papermill and friends keep it as given)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temps(path: str | Path) -> list[Path]:
    """The temporary files of `path` left by processes of this host that are gone (a writer killed mid-write)."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.stem)}\.{re.escape(HOST)}\.(\d+)\.[0-9a-f]{{8}}\.tmp"
                         rf"{re.escape(path.suffix)}$")
    if not path.parent.is_dir():
        return []
    found = []
    for candidate in path.parent.glob(f".{path.stem}.*.tmp{path.suffix}"):
        match = pattern.match(candidate.name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            found.append(candidate)
    return found


def _target(path: str | Path) -> Path:
    """Where a write to `path` lands: the file a symbolic link points at (even one not there yet), else `path`."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` for the caller to write; when the block ends it replaces `path`
    (`os.replace`); when the block raises it is removed and `path` is left as it was. The folder is created."""
    target = _target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for leftover in stale_temps(target):
        leftover.unlink(missing_ok=True)


def write_parquet(frame: pd.DataFrame, path: str | Path, **kwargs: Any) -> Path:
    """`frame.to_parquet(path, **kwargs)`, atomically; returns `path`."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, **kwargs)
    return Path(path)


def write_csv(frame: pd.DataFrame, path: str | Path, **kwargs: Any) -> Path:
    """`frame.to_csv(path, **kwargs)`, atomically; returns `path`."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)
    return Path(path)


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """`Path(path).write_text(text)`, atomically; returns `path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def read_parquet(path: str | Path, fix: str, columns: list[str] | None = None) -> pd.DataFrame:
    """`pd.read_parquet(path, columns=columns)`, or one error naming the file and `fix` (what writes it again):
    FileNotFoundError when it is not there, CorruptFileError when it cannot be read."""
    import pandas as pd
    import pyarrow

    path = Path(path)
    try:
        return pd.read_parquet(path, columns=columns)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: {fix}") from None
    except (OSError, ValueError, pyarrow.ArrowException) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CorruptFileError(f"{path} cannot be read ({reason}): it is truncated or corrupt; delete it and "
                               f"{fix}") from None


def file_errors_in_one_line(main: Callable[[list[str] | None], int | None], prog: str,
                            argv: list[str] | None = None) -> int:
    """`main(argv)` of a command line, with a missing or damaged input file (FileNotFoundError, CorruptFileError:
    their messages name the file and the fix) printed as one line on stderr, exit status 2, not a traceback."""
    try:
        return int(main(argv) or 0)
    except (FileNotFoundError, CorruptFileError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
