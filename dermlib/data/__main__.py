"""`python -m dermlib.data doctor --profile paper [--set KEY=VALUE ...]`: see dermlib.data.doctor."""

from __future__ import annotations

import argparse
import sys
import time

from dermlib.config import add_cli_arguments, config_from_cli
from dermlib.data.doctor import diagnose, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dermlib.data", description=__doc__)
    parser.add_argument("command", choices=["doctor"])
    add_cli_arguments(parser, default_profile="paper")
    args = parser.parse_args(argv)
    cfg, _ = config_from_cli(parser, args)
    start = time.perf_counter()
    checks = diagnose(cfg)
    print(report(checks))
    print(f"(checked in {time.perf_counter() - start:.1f} s)")
    return 0 if all(c.status == "ok" for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
