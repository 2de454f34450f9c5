"""Deprecated name: `python -m dermlib.findings` is now `python -m dermlib.report.findings` (the README block)."""

import sys
import warnings

from dermlib.report.findings import main

if __name__ == "__main__":
    warnings.warn("python -m dermlib.findings is deprecated: use python -m dermlib.report.findings",
                  FutureWarning, stacklevel=1)
    sys.exit(main())
