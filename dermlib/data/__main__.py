"""`python -m dermlib.data doctor --profile paper [--set KEY=VALUE ...]`: see dermlib.data.doctor."""

from __future__ import annotations

import argparse
import sys
import time

from dermlib.config import PROFILES, get_config, parse_sets
from dermlib.data.doctor import diagnose, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dermlib.data", description=__doc__)
    parser.add_argument("command", choices=["doctor"])
    parser.add_argument("--profile", default="paper", choices=sorted(PROFILES))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted config override, e.g. data.roots.ham10000=/data/HAM10000")
    args = parser.parse_args(argv)
    try:
        cfg = get_config(args.profile, parse_sets(args.set))
    except (KeyError, ValueError) as err:
        parser.error(str(err).strip('"'))
    start = time.perf_counter()
    checks = diagnose(cfg)
    print(report(checks))
    print(f"(checked in {time.perf_counter() - start:.1f} s)")
    return 0 if all(c.status == "ok" for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
