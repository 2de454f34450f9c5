"""`python -m dermlib.train --profile demo --set train.strategy=M+P1` trains one run (see `dermlib.train.runs.main`);
a missing or damaged input (no manifest in the work dir, a truncated notes table) ends in one line, exit status 2."""

import sys

from dermlib.atomic import file_errors_in_one_line
from dermlib.train.runs import main

if __name__ == "__main__":
    sys.exit(file_errors_in_one_line(main, "python -m dermlib.train"))
