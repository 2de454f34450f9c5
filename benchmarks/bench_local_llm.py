"""Local LLM throughput: notes/s of SmolLM2-135M (llama.cpp) against servers x threads, per strategy.

    python benchmarks/bench_local_llm.py --n 12 --json benchmarks/results/local_llm.json

Each setting starts its own servers and writes into a fresh temporary cache, so nothing is reused between
settings; the same demo samples are asked every time (the first `--n` of the frozen demo manifest in a stable
pseudo-random order). Prints notes/s and prompt / completion tokens per note. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from dermlib.config import get_config
from dermlib.data.schema import read_manifest
from dermlib.notes.profile import synthesize_profile
from dermlib.workdir import WorkDir


def measure(manifest, servers: int, threads: int, n: int, strategies: list[str]) -> list[dict]:
    """One setting: every strategy on the same `n` samples, from an empty cache."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = get_config("demo", {"notes.servers": servers, "notes.n_threads": threads, "notes.limit": n,
                                  "notes.cache_path": str(Path(tmp) / "cache.sqlite")})
        for strategy in strategies:
            start = time.perf_counter()
            notes = synthesize_profile(manifest, cfg, [strategy])
            seconds = time.perf_counter() - start
            stats = notes.attrs["stats"][strategy]
            done = notes[notes["status"].isin(["ok", "failed"])]
            rows.append({"servers": servers, "threads": threads, "strategy": strategy, "notes": len(done),
                         "ok": int((done["status"] == "ok").sum()), "seconds": round(seconds, 1),
                         "notes_per_s": round(len(done) / seconds, 3),
                         "prompt_tokens_per_note": round(stats["prompt_tokens"] / max(len(done), 1), 1),
                         "completion_tokens_per_note": round(stats["completion_tokens"] / max(len(done), 1), 1),
                         "llm_calls": stats["llm_calls"]})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=12, help="samples per strategy and setting")
    parser.add_argument("--settings", nargs="+", default=["1x2", "2x1", "1x1"], help="SERVERSxTHREADS")
    parser.add_argument("--strategies", nargs="+", default=["M+P1", "M+P2", "P3"])
    parser.add_argument("--manifest", default=None, help="default: <demo work dir>/manifest.parquet")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    manifest = read_manifest(args.manifest or WorkDir.of(get_config("demo")).manifest)
    rows = []
    for setting in args.settings:
        servers, threads = (int(v) for v in setting.split("x"))
        rows += measure(manifest, servers, threads, args.n, args.strategies)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
