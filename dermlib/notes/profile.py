"""Notes for a whole profile: settings from the config, and the local LLM started only when notes are missing
(the notes table on disk is `dermlib.notes.store`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from dermlib.config import REPO_ROOT
from dermlib.notes.local_llm import INSTALL_HINT, LocalLLM, llama_cpp_available
from dermlib.notes.synth import count_pending, synthesize


def cache_path(cfg: dict[str, Any]) -> Path:
    """The profile's note cache: `notes.cache_path` with {work_dir} filled in; relative paths are under the repo."""
    path = Path(str(cfg["notes"]["cache_path"]).format(work_dir=cfg["work_dir"]))
    return path if path.is_absolute() else REPO_ROOT / path


def settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `synthesize` for a profile (the API key is never part of a config)."""
    n = cfg["notes"]
    return {"backend": n["backend"], "base_url": n["base_url"], "model": n["model"], "cache_path": cache_path(cfg),
            "concurrency": n["concurrency"], "timeout": n["timeout"], "max_retries": n["max_retries"],
            "temperature": n["temperature"], "max_tokens": n["max_tokens"], "limit": n["limit"],
            "outage_after": n["outage_after"]}


def synthesize_profile(manifest: pd.DataFrame, cfg: dict[str, Any], strategies: list[str] | None = None,
                       *, retry_failed: bool = False) -> pd.DataFrame:
    """All strategies' notes for a manifest, long format; `attrs["stats"]` maps strategy -> run stats.

    With backend "llamacpp" and no base_url, `notes.servers` local SmolLM2 servers (`notes.n_threads` threads
    each) are started only if some note is missing.
    """
    strategies = list(strategies or cfg["notes"]["strategies"])
    kwargs = {**settings(cfg), "retry_failed": retry_failed}
    pending = {s: count_pending(manifest, s, **kwargs) for s in strategies}
    servers: list[LocalLLM] = []
    try:
        if sum(pending.values()) and kwargs["backend"] == "llamacpp" and not kwargs["base_url"]:
            if not llama_cpp_available():
                raise RuntimeError(f"{sum(pending.values())} notes are not in the cache {kwargs['cache_path']} and "
                                   f"the local LLM is not installed: {INSTALL_HINT}")
            for _ in range(max(1, int(cfg["notes"]["servers"]))):
                servers.append(LocalLLM(alias=kwargs["model"], n_threads=cfg["notes"]["n_threads"]).start())
            kwargs["base_url"] = [server.base_url for server in servers]
            kwargs["concurrency"] = max(kwargs["concurrency"], len(servers))
        frames = [synthesize(manifest, s, **kwargs) for s in strategies]
    finally:
        for server in servers:
            server.stop()
    out = pd.concat(frames, ignore_index=True)
    out.attrs["stats"] = {s: {**f.attrs.get("stats", {}), "pending_before": pending[s]} for s, f in zip(strategies, frames)}
    return out
