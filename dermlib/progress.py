"""Progress for the long loops of the CLIs and notebooks (no torch import).

`progress(total, desc)` is a tqdm.auto bar (a widget in a notebook kernel that can draw one) that stays off where
it would only add text lines: a log file, a pipe, a stored notebook without widgets.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any


def progress_enabled(stream: Any = None) -> bool:
    """Whether a bar should show: on a terminal, or in a notebook kernel that can draw widgets; never in a worker
    process of `dermlib.train.grid` (DERMLIB_NO_PROGRESS=1), whose bars would overwrite the parent's."""
    if os.environ.get("DERMLIB_NO_PROGRESS") == "1":
        return False
    stream = sys.stderr if stream is None else stream
    if getattr(stream, "isatty", lambda: False)():
        return True
    return "ipykernel" in sys.modules and importlib.util.find_spec("ipywidgets") is not None


def progress(total: int | None, desc: str, *, initial: int = 0, unit: str = "it", show: bool = True,
             **kwargs: Any) -> Any:
    """A tqdm.auto bar, disabled where `progress_enabled` says no or the caller says `show=False` (a pass too short
    to be worth a bar); use it as a context manager or close() it.

    A disabled bar is a plain tqdm: importing tqdm.auto in a kernel without ipywidgets prints a warning."""
    enabled = show and progress_enabled()
    if enabled:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled,
                mininterval=1.0, dynamic_ncols=True, **kwargs)


