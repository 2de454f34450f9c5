"""`python -m dermlib.train --profile demo --set train.strategy=M+P1` trains one run (see `dermlib.train.runs.main`)."""

import sys

from dermlib.train.runs import main

if __name__ == "__main__":
    sys.exit(main())
