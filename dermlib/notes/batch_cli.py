"""`python -m dermlib.notes --batch submit|collect` (the `dermlib notes` console command too): the Batch route
(`dermlib.notes.batch`) from the command line, resumable from any later session on the same cache file.

    python -m dermlib.notes --profile paper --batch submit       # every missing note of the LLM strategies
    python -m dermlib.notes --profile paper --batch collect      # look once; --timeout 3600 waits up to an hour

Exit status: 0 done; 1 a problem (a refused call, a failed batch, answers that match no note); 3
(`STILL_RUNNING`) some batch is still running: run collect again later.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

from dermlib.data.schema import read_manifest
from dermlib.notes.batch import MAX_BYTES, MAX_REQUESTS, BatchError, Collected, collect_batches, submit_batches
from dermlib.notes.cache import NoteCache
from dermlib.notes.plan import NoteSettings
from dermlib.notes.strategies import Combo, Strategy, get_strategy
from dermlib.workdir import WorkDir

STILL_RUNNING = 3


def llm_strategies(names: list[str]) -> list[str]:
    """The LLM base strategies among `names` (combinations give their parts; templates are left out)."""
    out: list[str] = []
    for name in names:
        strat = get_strategy(name)
        for part in (strat.parts if isinstance(strat, Combo) else (strat.name,)):
            base = get_strategy(part)
            if isinstance(base, Strategy) and base.uses_llm and base.name not in out:
                out.append(base.name)
    return out


def batch_command(action: str, cfg: dict[str, Any], manifest_path: str | None, strategies: list[str] | None, *,
                  retry_failed: bool = False, timeout: float = 0.0, poll_interval: float = 60.0,
                  max_requests: int = MAX_REQUESTS, max_bytes: int = MAX_BYTES) -> int:
    """Run `--batch submit` or `--batch collect`, print a short summary; the exit status (see the module)."""
    settings = replace(NoteSettings.from_config(cfg), retry_failed=retry_failed)
    path = manifest_path or WorkDir.of(cfg).manifest
    try:
        manifest = read_manifest(path)
        if action == "submit":
            return _submit(manifest, settings, llm_strategies(strategies or cfg["notes"]["strategies"]),
                           max_requests, max_bytes)
        chosen = llm_strategies(strategies) if strategies else None
        report = collect_batches(manifest, settings, strategies=chosen, poll_interval=poll_interval, timeout=timeout)
    except (BatchError, ValueError, FileNotFoundError) as err:
        print(f"notes --batch {action} failed: {err}", file=sys.stderr)
        return 1
    return _report(report, settings)


def _submit(manifest: Any, settings: NoteSettings, strategies: list[str], max_requests: int, max_bytes: int) -> int:
    """Submit each strategy's missing notes; print what was submitted and what was already pending."""
    if not strategies:
        print("notes --batch submit: no LLM strategy to submit (M+P1, M+P2, P3): pass --strategies", file=sys.stderr)
        return 1
    total_batches = total_requests = 0
    for name in strategies:
        done = submit_batches(manifest, name, settings, max_requests=max_requests, max_bytes=max_bytes)
        if done.held:
            held = ", ".join(f"{b} ({n})" for b, n in done.held.items())
            print(f"{name}: {sum(done.held.values())} notes are already in pending batches {held}: not submitted "
                  "again; run --batch collect")
        if done.batch_ids:
            print(f"{name}: submitted {len(done.batch_ids)} batches ({', '.join(done.batch_ids)}), {done.n_requests} "
                  f"requests, {done.n_bytes / 1e6:.2f} MB")
        elif not done.held:
            print(f"{name}: nothing to submit (every note is in the cache)")
        total_batches += len(done.batch_ids)
        total_requests += done.n_requests
    print(f"submitted {total_batches} batches, {total_requests} requests; recorded in {settings.cache_path}. "
          "Collect with --batch collect (results within 24 h)")
    return 0


def _report(report: Collected, settings: NoteSettings) -> int:
    """Print what collect did; 1 on a problem, STILL_RUNNING when some batch runs still, else 0."""
    if not report.collected and not report.running and not report.problems:
        with NoteCache(settings.cache_path) as cache:
            print(f"no pending batches in {cache.path}: submit with --batch submit")
        return 0
    ended = ", ".join(f"{b} {status}" for b, status in report.collected.items()) or "none"
    print(f"collected {len(report.collected)} batches ({ended}): {report.ok} notes ok, {report.failed} failed "
          f"(stored with the reason), {report.unanswered} unanswered (not run; pending: the next submit asks them "
          f"again), {report.already} already stored; tokens {report.prompt_tokens} prompt + "
          f"{report.completion_tokens} completion, estimated cost ${report.cost_usd:.4f} at the Batch price")
    if report.errors:
        print("failures: " + "; ".join(f"{n} x {reason}" for reason, n in report.errors.most_common(5)))
    for problem in report.problems:
        print(f"notes --batch collect: {problem}", file=sys.stderr)
    if report.running:
        statuses = "/".join(sorted(set(report.running.values())))
        print(f"{', '.join(report.running)}: still {statuses}, run collect again later (exit status {STILL_RUNNING})",
              file=sys.stderr)
    if report.problems:
        return 1
    return STILL_RUNNING if report.running else 0
