"""OpenAI Batch API route for bulk synthesis (half the price, results within 24 h), into the same cache.

    batch_id = submit_batch(manifest, "M+P1", model="gpt-4o-mini", cache_path=...)   # JSONL upload -> batch
    collect_batch(batch_id, manifest, "M+P1", model="gpt-4o-mini", cache_path=...)   # poll -> results -> cache
    notes = synthesize(manifest, "M+P1", model="gpt-4o-mini", cache_path=...)         # reads the cache

Both calls must get the same manifest and settings (they define the cache keys). Answers that fail validation
are stored as failures; `synthesize(..., retry_failed=True)` re-asks them through the normal route.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import openai
import pandas as pd
from openai.types.chat import ChatCompletion

from dermlib.notes.cache import NoteCache
from dermlib.notes.engine import estimate_cost, judge, scrub
from dermlib.notes.strategies import Strategy, get_strategy
from dermlib.notes.synth import _api_key, _llm_settings, _plan, max_tokens_for, synthesize

TERMINAL = ("completed", "failed", "expired", "cancelled")


def _base_strategy(strategy: str) -> Strategy:
    strat = get_strategy(strategy)
    if not isinstance(strat, Strategy) or not strat.uses_llm:
        raise ValueError(f"the Batch route takes one LLM strategy (M+P1, M+P2 or P3), not {strategy!r}")
    return strat


def _planned(manifest: pd.DataFrame, strategy: str, cache: NoteCache, settings: dict[str, Any]) -> tuple[Strategy, Any, str, str]:
    strat = _base_strategy(strategy)
    backend, model = _llm_settings(settings.get("backend"), settings.get("base_url"), settings.get("model"))
    params = {"temperature": settings.get("temperature", 0.7),
              "max_tokens": max_tokens_for(settings.get("max_tokens", 160), strat.name)}
    plan = _plan(manifest, strat, backend=backend, model=model, params=params, limit=settings.get("limit"),
                 cache=cache, retry_failed=settings.get("retry_failed", False))
    return strat, plan, backend, model


def submit_batch(manifest: pd.DataFrame, strategy: str, *, cache_path: str | Path, model: str,
                 api_key: str | None = None, base_url: str | None = None, **settings: Any) -> str | None:
    """Upload the missing notes' requests as JSONL and create a batch; returns its id (None if nothing is missing)."""
    settings.update(model=model, base_url=base_url)
    with NoteCache(cache_path) as cache:
        strat, plan, backend, model = _planned(manifest, strategy, cache, settings)
    if not plan.jobs:
        return None
    params = {"temperature": settings.get("temperature", 0.7),
              "max_tokens": max_tokens_for(settings.get("max_tokens", 160), strat.name)}
    lines = []
    for key, job in plan.jobs.items():
        body: dict[str, Any] = {"model": model, "messages": job.messages, "seed": job.seed, **params}
        if job.response_format is not None:
            body["response_format"] = job.response_format
        lines.append(json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body}))
    secret = _api_key(backend, api_key)
    client = openai.OpenAI(base_url=base_url, api_key=secret, max_retries=3)
    try:
        upload = client.files.create(file=(f"dermlib-{strat.template}.jsonl", io.BytesIO("\n".join(lines).encode())),
                                     purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
                                      metadata={"dermlib_strategy": strat.name, "template_version": strat.template_version})
    except openai.APIError as exc:
        raise RuntimeError(f"Batch submission failed: {scrub(str(exc), secret)}") from None
    finally:
        client.close()
    return batch.id


def collect_batch(batch_id: str, manifest: pd.DataFrame, strategy: str, *, cache_path: str | Path, model: str,
                  api_key: str | None = None, base_url: str | None = None, poll_interval: float = 30.0,
                  timeout: float | None = None, **settings: Any) -> dict[str, Any]:
    """Poll a batch until it ends, then store every answer (validated like the normal route) in the cache."""
    settings.update(model=model, base_url=base_url)
    backend, model = _llm_settings(settings.get("backend"), base_url, model)
    secret = _api_key(backend, api_key)
    client = openai.OpenAI(base_url=base_url, api_key=secret, max_retries=3)
    start = time.monotonic()
    try:
        batch = client.batches.retrieve(batch_id)
        while batch.status not in TERMINAL:
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError(f"batch {batch_id} still {batch.status} after {timeout:.0f} s; call collect_batch again later")
            time.sleep(poll_interval)
            batch = client.batches.retrieve(batch_id)
        if batch.status != "completed" or not batch.output_file_id:
            raise RuntimeError(f"batch {batch_id} ended with status {batch.status!r}; nothing was stored")
        text = client.files.content(batch.output_file_id).text
    except openai.APIError as exc:
        raise RuntimeError(f"Batch retrieval failed: {scrub(str(exc), secret)}") from None
    finally:
        client.close()
    stats = {"ok": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0}
    with NoteCache(cache_path) as cache:
        strat, plan, _, _ = _planned(manifest, strategy, cache, {**settings, "retry_failed": True})
        for line in filter(None, (raw.strip() for raw in text.splitlines())):
            item = json.loads(line)
            job = plan.jobs.get(item["custom_id"])
            if job is None:
                continue  # already stored, or from other settings
            response = item.get("response") or {}
            note = raw = None
            usage = {}
            if response.get("status_code") == 200:
                completion = ChatCompletion.model_validate(response["body"])
                usage = response["body"].get("usage") or {}
                note, raw, error = judge(job, completion)
            else:
                error = scrub(f"batch item failed: HTTP {response.get('status_code')} {item.get('error')}", secret)
            status = "ok" if error is None else "failed"
            stats[status] += 1
            stats["prompt_tokens"] += usage.get("prompt_tokens", 0)
            stats["completion_tokens"] += usage.get("completion_tokens", 0)
            cache.put({"key": job.key, "backend": backend, "model": model, "strategy": strat.name,
                       "template_version": strat.template_version, "seed": job.seed, "status": status, "note": note,
                       "raw": None if status == "ok" else raw, "error": error, "n_attempts": 1,
                       "prompt_tokens": usage.get("prompt_tokens", 0),
                       "completion_tokens": usage.get("completion_tokens", 0)})
    stats["cost_usd"] = estimate_cost(model, stats["prompt_tokens"], stats["completion_tokens"], batch=True)
    return stats


def synthesize_batch(manifest: pd.DataFrame, strategy: str, *, cache_path: str | Path, model: str,
                     api_key: str | None = None, base_url: str | None = None, poll_interval: float = 30.0,
                     timeout: float | None = None, **settings: Any) -> pd.DataFrame:
    """submit_batch + collect_batch + synthesize (which then only reads the cache)."""
    batch_id = submit_batch(manifest, strategy, cache_path=cache_path, model=model, api_key=api_key,
                            base_url=base_url, **settings)
    stats = None
    if batch_id is not None:
        stats = collect_batch(batch_id, manifest, strategy, cache_path=cache_path, model=model, api_key=api_key,
                              base_url=base_url, poll_interval=poll_interval, timeout=timeout, **settings)
    keep = {k: v for k, v in settings.items() if k in ("backend", "temperature", "max_tokens", "limit")}
    out = synthesize(manifest, strategy, cache_path=cache_path, model=model, api_key=api_key, base_url=base_url,
                     max_retries=0, **keep)
    out.attrs["batch"] = {"batch_id": batch_id, **(stats or {})}
    return out
