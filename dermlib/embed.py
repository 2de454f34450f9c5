"""Deprecated name: `python -m dermlib.embed` is now `python -m dermlib.train.features` (writes a profile's note store)."""

import sys
import warnings

from dermlib.train.features import main

if __name__ == "__main__":
    warnings.warn("python -m dermlib.embed is deprecated: use python -m dermlib.train.features",
                  FutureWarning, stacklevel=1)
    sys.exit(main())
