"""Notes for a whole profile: settings from the config, and the local LLM started only when notes are missing
(the notes table on disk is `dermlib.notes.store`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd

from dermlib.notes.local_llm import INSTALL_HINT, LocalLLM, llama_cpp_available
from dermlib.notes.plan import NoteSettings
from dermlib.notes.synth import count_pending, synthesize


def synthesize_profile(manifest: pd.DataFrame, cfg: dict[str, Any], strategies: list[str] | None = None,
                       *, retry_failed: bool = False) -> pd.DataFrame:
    """All strategies' notes for a manifest, long format; `attrs["stats"]` maps strategy -> run stats.

    With backend "llamacpp" and no base_url, `notes.servers` local SmolLM2 servers (`notes.n_threads` threads
    each) are started only if some note is missing.
    """
    strategies = list(strategies or cfg["notes"]["strategies"])
    settings = replace(NoteSettings.from_config(cfg), retry_failed=retry_failed)
    pending = {s: count_pending(manifest, s, settings) for s in strategies}
    servers: list[LocalLLM] = []
    try:
        if sum(pending.values()) and settings.backend == "llamacpp" and not settings.base_url:
            if not llama_cpp_available():
                raise RuntimeError(f"{sum(pending.values())} notes are not in the cache {settings.cache_path} and "
                                   f"the local LLM is not installed: {INSTALL_HINT}")
            for _ in range(max(1, int(cfg["notes"]["servers"]))):
                servers.append(LocalLLM(alias=settings.model, n_threads=cfg["notes"]["n_threads"]).start())
            settings = replace(settings, base_url=[server.base_url for server in servers],
                               concurrency=max(settings.concurrency, len(servers)))
        frames = [synthesize(manifest, s, settings) for s in strategies]
    finally:
        for server in servers:
            server.stop()
    out = pd.concat(frames, ignore_index=True)
    out.attrs["stats"] = {s: {**f.attrs.get("stats", {}), "pending_before": pending[s]} for s, f in zip(strategies, frames)}
    return out
