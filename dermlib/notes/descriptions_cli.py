"""Fill a profile's class-description cache alone, without touching its notes (`dermlib.notes.descriptions`):

    python -m dermlib.notes.descriptions_cli --profile demo                  # the missing and transient ones
    python -m dermlib.notes.descriptions_cli --profile demo --retry-failed   # and the failed ones, asked again

The way out when notebook 04 stops on a class with no usable description: notebook 02 never asks again for a
description stored as a permanent failure (a refusal, a proxy's HTML page), so the same failure would come back on
every re-run; this asks again for those (with `--retry-failed`) and for nothing else, so no note and no run changes.
Pass the run's own `--set` options (its notes.base_url, notes.model, work_dir). Exit status 0 when every style and
class has a usable description, 1 otherwise (each one left, with its stored error, on stderr) or when the run
stopped early (an outage, a refused key or model, more requests than `--set notes.ask_limit=N` allows).
"""

from __future__ import annotations

import argparse
import sys

from dermlib.config import add_cli_arguments, config_from_cli
from dermlib.data.labels import config_classes
from dermlib.notes.descriptions import class_descriptions, descriptions_cache_path, generate_descriptions
from dermlib.notes.engine import LLMOutageError, LLMRejectedError
from dermlib.notes.profile import AskLimitError


def main(argv: list[str] | None = None) -> int:
    """The command line above; returns its exit status."""
    parser = argparse.ArgumentParser(prog="python -m dermlib.notes.descriptions_cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--retry-failed", action="store_true",
                        help="ask again for class descriptions stored as permanent failures")
    add_cli_arguments(parser)
    args = parser.parse_args(argv)
    cfg, overrides = config_from_cli(parser, args)
    if "notes.ask_limit" not in overrides:  # this command is the explicit request for every missing description
        cfg["notes"]["ask_limit"] = None
    try:
        counts = generate_descriptions(cfg, retry_failed=args.retry_failed)
    except (LLMOutageError, LLMRejectedError, AskLimitError) as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 1
    print(f"class descriptions: {counts['ok']} usable, {counts['failed']} failed ({counts['asked']} asked now) in "
          f"{descriptions_cache_path(cfg)}")
    try:
        class_descriptions(cfg, config_classes(cfg))
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
