"""The `dermlib` command (a console entry point): one subcommand per pipeline step, each the step's own CLI.

    dermlib run --profile demo              the notebooks in order (python -m dermlib.pipeline)
    dermlib data doctor --profile paper     what the real datasets lack (python -m dermlib.data)
    dermlib notes --profile paper --check   the notes pre-flight, or a whole note cache (python -m dermlib.notes)
    dermlib notes --batch submit|collect    the same notes through OpenAI's Batch API (half the price, within 24 h)
    dermlib descriptions --retry-failed     the class descriptions alone (python -m dermlib.notes.descriptions_cli)
    dermlib train --set train.strategy=M    one run (python -m dermlib.train; torchrun-able)
    dermlib features --profile demo         the frozen encoders' features (python -m dermlib.train.features)
    dermlib export RUN OUT                  a run as a Hub model folder (python -m dermlib.evaluate.export)
    dermlib predict IMAGE... --model OUT    classify raw images with it (python -m dermlib.predict)
    dermlib app --model OUT                 a local web app over it (pip install "dermlib[app]")
    dermlib findings --profile demo         the results in words (python -m dermlib.report.findings)
"""

from __future__ import annotations

import importlib
import sys

from dermlib.atomic import file_errors_in_one_line

# subcommand -> the module whose `main(argv)` it runs (imported only when chosen: each pulls in its own step)
COMMANDS: dict[str, str] = {
    "run": "dermlib.pipeline", "data": "dermlib.data.__main__", "notes": "dermlib.notes.__main__",
    "descriptions": "dermlib.notes.descriptions_cli",
    "train": "dermlib.train.runs", "features": "dermlib.train.features", "export": "dermlib.evaluate.export",
    "findings": "dermlib.report.findings", "predict": "dermlib.predict.__main__",
    "app": "dermlib.predict.app",
}


def main(argv: list[str] | None = None) -> int:
    """`dermlib SUBCOMMAND [ARGS]`: run that step's command line with ARGS; no subcommand prints the list."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"dermlib: unknown command {command!r}; choose one of {', '.join(COMMANDS)} (dermlib --help)",
              file=sys.stderr)
        return 2
    saved, sys.argv = sys.argv, [f"dermlib {command}", *rest]  # each step's argparse names itself after the command
    try:
        # a missing or damaged input file ends in one line naming it and the fix, exit status 2 (dermlib.atomic)
        return file_errors_in_one_line(importlib.import_module(COMMANDS[command]).main, f"dermlib {command}", rest)
    finally:
        sys.argv = saved


if __name__ == "__main__":
    sys.exit(main())
