"""Deprecated name: `python -m dermlib.export` is now `python -m dermlib.evaluate.export` (exports a finished run)."""

import sys
import warnings

from dermlib.evaluate.export import main

if __name__ == "__main__":
    warnings.warn("python -m dermlib.export is deprecated: use python -m dermlib.evaluate.export",
                  FutureWarning, stacklevel=1)
    sys.exit(main())
