"""Notes for a whole profile: settings from the config, and the local LLM started only when notes are missing
(the notes table on disk is `dermlib.notes.store`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pandas as pd

from dermlib.notes.local_llm import INSTALL_HINT, LocalLLM, llama_cpp_available
from dermlib.notes.cache import NoteCache
from dermlib.notes.engine import estimate_cost
from dermlib.notes.plan import NoteSettings, plan_jobs
from dermlib.notes.strategies import Combo, get_strategy
from dermlib.notes.synth import count_pending, synthesize

# Notes per second of the demo's local LLM (2 SmolLM2-135M servers x 1 thread, 2 idle cores), as measured by
# benchmarks/bench_local_llm.py (benchmarks/results/local_llm.json); class descriptions are P3-like free text.
LOCAL_NOTES_PER_SECOND = {"M+P1": 0.27, "M+P2": 0.12, "P3": 0.52}
DESCRIPTIONS_PER_SECOND = LOCAL_NOTES_PER_SECOND["P3"]


class AskLimitError(RuntimeError):
    """More LLM requests than `notes.ask_limit` allows: nothing was asked."""


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{max(1, round(seconds / 60))} min"


def check_ask_limit(cfg: dict[str, Any], pending: dict[str, int], what: str,
                    rates: dict[str, float] | None = None) -> None:
    """Refuse, before any request, when `pending` (name -> requests) adds up to more than `notes.ask_limit`,
    saying how many, how long at the local LLM's measured `rates` (name -> per second) and how to go ahead."""
    limit, total = cfg["notes"].get("ask_limit"), sum(pending.values())
    if limit is None or total <= limit:
        return
    rates = LOCAL_NOTES_PER_SECOND if rates is None else rates
    parts = ", ".join(f"{name} {n:,}" for name, n in pending.items() if n)
    local = cfg["notes"]["backend"] == "llamacpp" and not cfg["notes"].get("base_url")
    if local and all(name in rates for name, n in pending.items() if n):
        seconds = sum(n / rates[name] for name, n in pending.items() if n)
        cost = f"about {_duration(seconds)} with the local LLM on 2 idle cores"
    else:
        cost = f"on {cfg['notes']['backend']} {cfg['notes']['model']!r}"
    raise AskLimitError(
        f"{total:,} {what} would be asked of the LLM ({parts}): {cost}; notes.ask_limit is {limit}, so nothing "
        f"was asked. A new value of a setting a note depends on (notes.temperature, notes.max_tokens, a template, "
        f"data.n_per_source, data.seed ...) makes those notes new: undo it to keep the committed notes, or ask "
        f"anyway with --set notes.ask_limit=null (overrides={{\"notes.ask_limit\": None}} in a notebook).")


class ReaskError(AskLimitError):
    """Notes the cache held for an earlier version of their requests would be asked again: nothing was asked."""


def check_reask(cfg: dict[str, Any], manifest: pd.DataFrame, settings: NoteSettings, pending: dict[str, int]) -> None:
    """Refuse, before any request, to ask for more than `notes.reask_limit` notes of a strategy when the cache holds
    that strategy's notes from the same model that no current request matches: an edit changed the requests (a
    template, a setting, the data), and asking again would buy those notes anew. Says how many, and at what cost
    (the stale notes' recorded tokens per note at the model's price, sync and Batch)."""
    limit = cfg["notes"].get("reask_limit")
    if limit is None or not any(pending.values()):
        return
    found: list[str] = []
    total = 0
    with NoteCache(settings.cache_path) as cache:
        for name in llm_parts([s for s, n in pending.items() if n]):
            plan = plan_jobs(manifest, get_strategy(name), settings, cache)
            if not plan.jobs:
                continue
            stale, prompt, completion = cache.usage(name, plan.model, set(plan.frame["key"].dropna()))
            if not stale:
                continue
            total += len(plan.jobs)
            share = len(plan.jobs) / stale
            sync = estimate_cost(plan.model, round(prompt * share), round(completion * share))
            price = f", about ${sync:,.2f} (${sync / 2:,.2f} by Batch)" if sync else ""
            found.append(f"{name}: {len(plan.jobs):,} to ask while {stale:,} stored notes match no request{price}")
    if found and total > limit:
        raise ReaskError(
            f"{total:,} notes would be asked again of {settings.model!r} ({'; '.join(found)}). Their stored notes "
            f"were asked with other requests: a template, a notes setting or the data changed since. notes.reask_limit "
            f"is {limit}, so nothing was asked. Undo the change to use the stored notes, or ask anyway with "
            f"--set notes.reask_limit=null.")


def llm_parts(strategies: list[str]) -> list[str]:
    """The LLM base strategies among `strategies` (a combination counts as its parts), each once, in order."""
    parts: list[str] = []
    for name in strategies:
        strat = get_strategy(name)
        for part in (strat.parts if isinstance(strat, Combo) else (name,)):
            if get_strategy(part).uses_llm and part not in parts:
                parts.append(part)
    return parts


@contextmanager
def local_servers(cfg: dict[str, Any], settings: NoteSettings, pending: int, what: str) -> Iterator[NoteSettings]:
    """The settings to ask with: as they are, or, for backend "llamacpp" without a base_url and `pending` requests,
    pointing at `notes.servers` local SmolLM2 servers (`notes.n_threads` threads each), started here and stopped on
    exit; `what` says what is missing ("notes are not in the cache …") when llama.cpp is not installed."""
    if not pending or settings.backend != "llamacpp" or settings.base_url:
        yield settings
        return
    if not llama_cpp_available():
        raise RuntimeError(f"{pending} {what} and the local LLM is not installed: {INSTALL_HINT}")
    servers: list[LocalLLM] = []
    try:
        for _ in range(max(1, int(cfg["notes"]["servers"]))):
            servers.append(LocalLLM(alias=settings.model, n_threads=cfg["notes"]["n_threads"]).start())
        yield replace(settings, base_url=[server.base_url for server in servers],
                      concurrency=max(settings.concurrency, len(servers)))
    finally:
        for server in servers:
            server.stop()


def synthesize_profile(manifest: pd.DataFrame, cfg: dict[str, Any], strategies: list[str] | None = None,
                       *, retry_failed: bool = False) -> pd.DataFrame:
    """All strategies' notes for a manifest, long format; `attrs["stats"]` maps strategy -> run stats.

    With backend "llamacpp" and no base_url, `notes.servers` local SmolLM2 servers (`notes.n_threads` threads
    each) are started only if some note is missing.
    """
    strategies = list(strategies or cfg["notes"]["strategies"])
    settings = replace(NoteSettings.from_config(cfg), retry_failed=retry_failed)
    pending = {s: count_pending(manifest, s, settings) for s in strategies}
    check_reask(cfg, manifest, settings, pending)
    check_ask_limit(cfg, pending, "notes")
    with local_servers(cfg, settings, sum(pending.values()), f"notes are not in the cache {settings.cache_path}") as asking:
        frames = [synthesize(manifest, s, asking) for s in strategies]
    out = pd.concat(frames, ignore_index=True)
    out.attrs["stats"] = {s: {**f.attrs.get("stats", {}), "pending_before": pending[s]} for s, f in zip(strategies, frames)}
    return out
