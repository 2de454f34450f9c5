"""Fill a profile's note cache from the command line (e.g. the committed demo cache):

    python -m dermlib.notes --profile demo                 # all strategies for <work_dir>/manifest.parquet
    python -m dermlib.notes --profile demo --manifest m.parquet --strategies M+P1 P3 --retry-failed
    python -m dermlib.notes --profile paper --check        # pre-flight only: one request per LLM strategy, the
                                                           # pending count and cost, when the model retires

Then the class descriptions of zero-shot evaluation (`eval.class_descriptions_cache`, dermlib.notes.descriptions) are
filled the same way, however many are missing (this command is the explicit request that `notes.ask_limit` waits
for; `--set notes.ask_limit=N` keeps a limit). The cache is compacted afterwards (WAL folded in, VACUUM) so it can be committed; it never holds a key. Exit status
1 when the run stopped early (an outage, a refused key, a model or schema the server refuses) or every LLM note
failed; transient failures are asked again by the next run, permanent ones with --retry-failed. With --check, exit
status 1 and one message when any check request fails (dermlib.notes.preflight).

The OpenAI Batch route (half the price, results within 24 h; dermlib.notes.batch_cli), resumable from any session:

    python -m dermlib.notes --profile paper --batch submit     # missing notes -> batches, ids kept in the cache
    python -m dermlib.notes --profile paper --batch collect [--timeout 3600 --poll-interval 60]

collect exits 3 while some batch is still running (run it again later), 1 on a problem, 0 when all are stored.
"""

from __future__ import annotations

import argparse
import sys
import time

from dermlib.config import add_cli_arguments, config_from_cli
from dermlib.data.schema import read_manifest
from dermlib.notes.batch import MAX_BYTES, MAX_REQUESTS
from dermlib.notes.cache import NoteCache
from dermlib.notes.descriptions import descriptions_cache_path, generate_descriptions
from dermlib.notes.engine import LLMOutageError, LLMRejectedError
from dermlib.notes.plan import cache_path
from dermlib.notes.profile import AskLimitError, synthesize_profile
from dermlib.notes.strategies import get_strategy
from dermlib.workdir import WorkDir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", default=None, help="manifest parquet (default <work_dir>/manifest.parquet)")
    parser.add_argument("--strategies", nargs="+", default=None, help="default: the profile's notes.strategies")
    parser.add_argument("--retry-failed", action="store_true", help="ask again for notes stored as failed")
    parser.add_argument("--check", action="store_true",
                        help="pre-flight only: one real request per LLM strategy, pending count, cost, retirement")
    parser.add_argument("--batch", choices=["submit", "collect"], default=None,
                        help="the OpenAI Batch route: submit the missing notes, or collect the pending batches")
    parser.add_argument("--timeout", type=float, default=0.0,
                        help="--batch collect: wait up to this many seconds for running batches (default 0: look once)")
    parser.add_argument("--poll-interval", type=float, default=60.0, help="--batch collect: seconds between polls")
    parser.add_argument("--batch-max-requests", type=int, default=MAX_REQUESTS,
                        help="--batch submit: requests per batch")
    parser.add_argument("--batch-max-bytes", type=int, default=MAX_BYTES, help="--batch submit: bytes per input file")
    add_cli_arguments(parser)
    args = parser.parse_args(argv)
    cfg, overrides = config_from_cli(parser, args)
    if args.batch:
        if args.check:
            parser.error("--check and --batch are separate steps: run one, then the other")
        from dermlib.notes.batch_cli import batch_command

        return batch_command(args.batch, cfg, args.manifest, args.strategies, retry_failed=args.retry_failed,
                             timeout=args.timeout, poll_interval=args.poll_interval,
                             max_requests=args.batch_max_requests, max_bytes=args.batch_max_bytes)
    if args.check:
        if args.strategies:
            cfg["notes"]["strategies"] = list(args.strategies)
        return check(cfg, args.manifest)
    if "notes.ask_limit" not in overrides:  # this command is the explicit request for every missing note
        cfg["notes"]["ask_limit"] = None
    manifest = read_manifest(args.manifest or WorkDir.of(cfg).manifest)
    start = time.perf_counter()
    try:
        notes = synthesize_profile(manifest, cfg, args.strategies, retry_failed=args.retry_failed)
        described = generate_descriptions(cfg, retry_failed=args.retry_failed)
    except (LLMOutageError, LLMRejectedError, AskLimitError) as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 1
    finally:
        with NoteCache(cache_path(cfg)) as cache:
            cache.compact()
            print(f"{cache.count('ok')} ok, {cache.count('failed')} failed and {cache.count('transient')} transient "
                  f"notes in {cache.path} ({cache.path.stat().st_size / 1e6:.2f} MB); took "
                  f"{time.perf_counter() - start:.0f} s")
    print(f"class descriptions: {described['ok']} usable, {described['failed']} failed ({described['asked']} asked now) "
          f"in {descriptions_cache_path(cfg)}")
    print(notes.groupby("strategy")["status"].value_counts().unstack(fill_value=0).to_string())
    for strategy, stats in notes.attrs["stats"].items():
        print(strategy, {k: v for k, v in stats.items() if k in ("llm_calls", "n_cached", "seconds", "cost_usd", "errors")})
    asked = notes[notes["status"] != "skipped"]
    llm = asked[asked["strategy"].map(lambda s: get_strategy(s).uses_llm)]
    if len(llm) and not (llm["status"] == "ok").any():
        print("every LLM note failed: see the errors above", file=sys.stderr)
        return 1
    return 0


def check(cfg: dict, manifest_path: str | None) -> int:
    """`--check`: print the pre-flight table; 1 with one message on stderr when a check fails."""
    from dermlib.notes.preflight import check_notes

    try:
        report = check_notes(cfg, read_manifest(manifest_path) if manifest_path else None)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"notes check failed: {err}", file=sys.stderr)
        return 1
    print(report.table())
    if not report.ok:
        print(f"notes check failed: {report.failure()}", file=sys.stderr)
        return 1
    print("notes check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
