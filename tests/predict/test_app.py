"""The local web app (dermlib.predict.app, `dermlib app`): started as a user starts it, in its own process, and driven
by a real headless Chromium (Playwright over the system browser; no mocks): an uploaded SynthDerm PNG shows the class
`predict()` gives the same file, with the synthetic banner; the server listens on 127.0.0.1 only; without gradio the
import says how to install it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dermlib.config import REPO_ROOT

STARTUP_S = 300  # importing torch and gradio and loading the model, on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """`python -m dermlib.cli app --model EXPORT --gallery ... --port N` running; yields (url, port)."""
    pytest.importorskip("gradio", reason='the app is an optional extra: pip install "dermlib[app]"')
    port, logs = _free_port(), tmp_path_factory.mktemp("app")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_TEMP_DIR": str(logs / "uploads")}
    with open(logs / "server.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dermlib.cli", "app", "--model", str(exported), "--gallery",
                                 str(exported / "embeddings_test.parquet"), "--port", str(port)],
                                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url, deadline = f"http://127.0.0.1:{port}/", time.monotonic() + STARTUP_S
    try:
        while True:
            assert proc.poll() is None, f"the app exited early:\n{(logs / 'server.log').read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(url, timeout=5) as page:
                    if page.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no app after {STARTUP_S} s:\n{(logs / 'server.log').read_text()}"
            time.sleep(1)
        yield url, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _listening(port: int) -> set[str]:
    """The local addresses of the sockets listening on this TCP port (Linux: /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word little-endian
                found.add(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the listening sockets from Linux's /proc")
def test_the_server_listens_on_127_0_0_1_only(server: tuple[str, int]) -> None:
    _, port = server
    assert _listening(port) == {"127.0.0.1"}
    others = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1"}
    for address in others:  # this machine's other addresses (127.0.1.1, a network card's) do not answer
        with socket.socket() as probe, pytest.raises(OSError):
            probe.settimeout(5)
            probe.connect((address, port))


def test_an_uploaded_image_shows_predicts_class_and_the_synthetic_banner(
        server: tuple[str, int], exported: Path, tmp_path: Path) -> None:
    pytest.importorskip("playwright", reason="the browser test needs playwright (the test extra)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH: the browser test drives the system's Chromium (never playwright install)")
    from playwright.sync_api import expect, sync_playwright

    from dermlib.data.synthderm import make_sample
    from dermlib.predict import DermModel, predict

    (tmp_path / "synthderm_dermo_d").mkdir()
    image = Path(make_sample("synthderm_dermo_d", 3, seed=5, image_size=64, out_dir=str(tmp_path))["image_path"])
    assert image.suffix == ".png"
    gallery = exported / "embeddings_test.parquet"
    reference = predict(DermModel.from_pretrained(exported), [image], gallery=gallery)[0]  # the answer, in this process
    assert reference.synthetic and reference.label and reference.neighbours
    shot = tmp_path / "app.png"
    url, _ = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, timeout=120_000)
            expect(page.locator("#dermlib-banner")).to_contain_text("Synthetic model", timeout=120_000)
            page.locator("#dermlib-image input[type=file]").set_input_files(str(image))
            verdict = page.locator("#dermlib-verdict")
            expect(verdict).to_contain_text("Predicted:", timeout=180_000)
            expect(verdict).to_contain_text(f"{reference.label_name} ({reference.label})")
            expect(page.locator("#dermlib-probs")).to_contain_text(reference.label)
            expect(page.locator("#dermlib-banner")).to_contain_text("trained on SynthDerm, not for patients")
            expect(page.locator("#dermlib-neighbours")).to_contain_text(reference.neighbours[0]["sample_id"])
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 1000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_gradio_the_import_says_how_to_install_it() -> None:
    code = ("import sys; sys.modules['gradio'] = None\n"  # as if gradio were not installed
            "try:\n    import dermlib.predict.app\nexcept ImportError as err:\n    print(err)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 0 and 'pip install "dermlib[app]"' in done.stdout, done.stderr[-2000:]
