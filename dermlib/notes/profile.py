"""Notes for a whole profile: settings from the config, and the local LLM started only when notes are missing
(the notes table on disk is `dermlib.notes.store`)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Iterator

import pandas as pd

from dermlib.notes.local_llm import INSTALL_HINT, LocalLLM, llama_cpp_available
from dermlib.notes.plan import NoteSettings
from dermlib.notes.synth import count_pending, synthesize


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
    with local_servers(cfg, settings, sum(pending.values()), f"notes are not in the cache {settings.cache_path}") as asking:
        frames = [synthesize(manifest, s, asking) for s in strategies]
    out = pd.concat(frames, ignore_index=True)
    out.attrs["stats"] = {s: {**f.attrs.get("stats", {}), "pending_before": pending[s]} for s, f in zip(strategies, frames)}
    return out
