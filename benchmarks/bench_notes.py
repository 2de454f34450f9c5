"""Notes/s versus concurrency: against the fake OpenAI server with injected latency (the engine should scale until
the server's own parallelism limits it), and against the local llama.cpp + SmolLM2 server (which serves one
request at a time, so concurrency cannot help there).

    python benchmarks/bench_notes.py                       # fake server: 0.2 s latency, at most 16 in parallel
    python benchmarks/bench_notes.py --llama --llama-n 6   # also the local LLM (slow: ~1-5 s per note on 2 cores)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: tests.fakes
from tests.fakes.fake_openai import FakeOpenAI  # noqa: E402

from dermlib.data.schema import to_manifest  # noqa: E402
from dermlib.notes import NoteSettings, synthesize  # noqa: E402
from dermlib.notes.local_llm import LocalLLM  # noqa: E402


def manifest(n: int) -> pd.DataFrame:
    """n SynthDerm-like rows with distinct metadata (so no two prompts share a cache key)."""
    labels = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]
    return to_manifest(pd.DataFrame([{
        "sample_id": f"bench/{i:05d}", "source": "synthderm_bench", "image_path": "-", "modality": "dermoscopic",
        "label": labels[i % 8], "label_raw": labels[i % 8], "age": 18 + i % 70, "sex": ("male", "female")[i % 2],
        "site": "anterior torso", "fitzpatrick": 1 + i % 6} for i in range(n)]))


# what every run shares; run() sets the cache, the concurrency and the server
BENCH = NoteSettings(backend=None, base_url=None, model=None, cache_path=None, concurrency=1, timeout=60.0,
                     max_retries=3, outage_after=10, temperature=0.7, max_tokens=160, limit=None)


def run(frame: pd.DataFrame, strategy: str, concurrency: int, **kw: object) -> tuple[float, int]:
    """Fresh cache, one synthesize call with BENCH changed by `kw`; returns (notes/s, number ok)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        settings = replace(BENCH, cache_path=Path(tmp) / "c.sqlite", concurrency=concurrency, **kw)
        out = synthesize(frame, strategy, settings)
        return len(frame) / (time.perf_counter() - start), int((out["status"] == "ok").sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=96, help="notes per fake-server run")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--server-parallel", type=int, default=16)
    parser.add_argument("--llama", action="store_true")
    parser.add_argument("--llama-n", type=int, default=6)
    args = parser.parse_args()
    rows = []
    with FakeOpenAI(latency=args.latency, max_parallel=args.server_parallel) as fake:
        for c in (1, 2, 4, 8, 16, 32):
            rate, ok = run(manifest(args.n if c > 1 else args.n // 4), "M+P1", c, base_url=fake.base_url,
                           model="fake", api_key="local")
            rows.append({"server": f"fake ({args.latency}s, {args.server_parallel} parallel)", "concurrency": c,
                         "notes_per_s": round(rate, 2), "ok": ok})
            print(rows[-1], flush=True)
    if args.llama:
        with LocalLLM() as llm:
            for c in (1, 2, 4):
                for strategy in ("M+P1", "P3"):
                    rate, ok = run(manifest(args.llama_n), strategy, c, base_url=llm.base_url, model=llm.model,
                                   backend="llamacpp", max_tokens=160)
                    rows.append({"server": f"llama.cpp SmolLM2 {strategy}", "concurrency": c,
                                 "notes_per_s": round(rate, 3), "ok": ok})
                    print(rows[-1], flush=True)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
