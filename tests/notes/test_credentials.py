"""Credentials never leave memory (issue 27, item 3): a base URL's user:password is kept out of every config, run
config, scratch folder name, notebook parameter, error and cache (against a fake server that echoes the
Authorization header it got), Basic and Bearer values are scrubbed alike, and OPENAI_API_KEY goes to OpenAI's own
host only, unless a setting names it; a key over plain http to another machine is warned about."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pytest

from dermlib.config import get_config
from dermlib.notes import synthesize
from dermlib.notes.engine import LLMAuthError, scrub
from dermlib.notes.plan import NoteSettings, api_key, to_openai
from dermlib.redact import CREDENTIALS_ENV, redact_url, with_credentials
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.notes import SECRET, llm_args, make_manifest

PASSWORD = "pw-Z9q-DO-NOT-LEAK"
USERINFO = f"alice:{PASSWORD}"
BASIC = base64.b64encode(USERINFO.encode()).decode()


def _with_credentials(url: str) -> str:
    return url.replace("http://", f"http://{USERINFO}@")


def _leaks(text: str | bytes) -> list[str]:
    """Which forms of the credentials a text holds (none, it should)."""
    data = text.encode() if isinstance(text, str) else text
    return [form for form in (PASSWORD, USERINFO, BASIC) if form.encode() in data]


@pytest.fixture(autouse=True)
def _forget_held_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no credentials held, and leaves none behind."""
    monkeypatch.setenv(CREDENTIALS_ENV, "{}")


def _stored(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.glob("c.sqlite*"))


def test_url_credentials_stay_out_of_the_config_its_folder_and_the_settings_repr(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERMLIB_WORK", str(tmp_path / "work"))
    monkeypatch.delenv("DERMLIB_FIGURES", raising=False)  # a variant's scratch folder is named after its overrides
    url = _with_credentials("http://127.0.0.1:9/v1")
    cfg = get_config("paper", {"notes.base_url": url, "notes.backend": "vllm"})
    assert cfg["notes"]["base_url"] == "http://***@127.0.0.1:9/v1"
    # what a run's config.json, an exported config and a notebook's printout hold; the scratch folder's name too
    assert _leaks(json.dumps({**cfg, "resolved": {"config_hash": "x"}}, default=str)) == []
    assert _leaks(cfg["work_dir"]) == [] and "scratch" in cfg["work_dir"]
    settings = NoteSettings.from_config(cfg)
    assert settings.base_url == url  # the client connects with them
    assert _leaks(repr(settings)) == [] and "***@127.0.0.1" in repr(settings)
    assert SECRET not in repr(replace(settings, api_key=SECRET))
    assert redact_url([url, None]) == ["http://***@127.0.0.1:9/v1", None]
    assert with_credentials("http://***@10.9.9.9/v1") == "http://10.9.9.9/v1"  # not held here: no made-up user


def test_a_notebook_kernel_gets_redacted_overrides_and_the_credentials_from_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dermlib.pipeline.run` hands papermill the redacted overrides (the executed notebook and its HTML show
    those); the kernel, a child process, still connects with the credentials it inherits."""
    import papermill

    from dermlib import pipeline

    monkeypatch.setenv("DERMLIB_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("DERMLIB_FIGURES", str(tmp_path / "figures"))
    url = _with_credentials("http://127.0.0.1:9/v1")
    seen: list[dict] = []

    def kernel(source: str, out: str, parameters: dict, **kwargs: object) -> None:  # stands for papermill
        seen.append(parameters)
        code = ("import json, sys; from dermlib.config import get_config; from dermlib.notes.plan import NoteSettings;"
                "print(NoteSettings.from_config(get_config(sys.argv[1], json.loads(sys.argv[2]))).base_url)")
        done = subprocess.run([sys.executable, "-c", code, parameters["profile"], json.dumps(parameters["overrides"])],
                              capture_output=True, text=True, timeout=120, env=dict(os.environ))
        seen.append({"kernel": done.stdout.strip(), "err": done.stderr[-2000:]})
        Path(out).write_text("{}")  # the executed notebook papermill would write

    monkeypatch.setattr(papermill, "execute_notebook", kernel)
    monkeypatch.setattr(pipeline, "relative_paths", lambda *args, **kwargs: None)
    monkeypatch.setattr(pipeline, "render_html", lambda *args, **kwargs: [])
    pipeline.run("demo", only="2", overrides={"notes.base_url": url, "notes.backend": "vllm"})
    assert _leaks(json.dumps(seen[0])) == [] and seen[0]["overrides"]["notes.base_url"] == "http://***@127.0.0.1:9/v1"
    assert seen[1]["kernel"] == url, seen[1]["err"]


def test_an_echoing_server_never_gets_the_credentials_into_the_cache_or_errors(tmp_path: Path) -> None:
    manifest = make_manifest(3)
    with FakeOpenAI(rule=lambda n, body: "echo_key") as fake:  # a good answer quoting the Authorization header
        out = synthesize(manifest, "P3", llm_args(fake, tmp_path / "c.sqlite", base_url=_with_credentials(fake.base_url)))
        sent = {b["_authorization"] for b in fake.chat_bodies}
    assert sent == {f"Basic {BASIC}"}  # the URL's credentials did go to the server they belong to
    assert (out["status"] == "ok").all() and out["note"].str.contains("Basic \\*\\*\\*").all()
    assert _leaks(_stored(tmp_path)) == [] and _leaks(out.to_json()) == []
    with FakeOpenAI(rule=lambda n, body: "400_echo") as fake:  # an error quoting it (2 rows: 3 refusals stop a run)
        failed = synthesize(manifest.head(2), "M+P1", llm_args(fake, tmp_path / "c.sqlite",
                                                       base_url=_with_credentials(fake.base_url)))
    assert (failed["status"] == "failed").all() and failed["error"].str.contains("Basic \\*\\*\\*").all()
    assert _leaks(failed.to_json()) == [] and _leaks(_stored(tmp_path)) == []
    with FakeOpenAI(api_key="sk-the-server-wants-this") as fake:  # 401: the run stops with one message
        with pytest.raises(LLMAuthError) as info:
            synthesize(manifest, "P3", llm_args(fake, tmp_path / "c.sqlite.401",
                                                base_url=_with_credentials(fake.base_url)))
    assert _leaks(str(info.value)) == [] and "http://***@127.0.0.1" in str(info.value)
    assert _leaks(_stored(tmp_path)) == []


def test_basic_and_bearer_values_are_scrubbed_alike_and_words_are_kept() -> None:
    text = (f"header Basic {BASIC}, or Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig, at http://{USERINFO}@host/v1; "
            "Basic examination, Bearer of news")
    out = scrub(text, None)
    assert _leaks(out) == [] and "eyJhbGci" not in out
    assert out.count("Basic ***") == 1 and "Bearer ***" in out and "http://***@host/v1" in out
    assert "Basic examination" in out and "Bearer of news" in out
    assert scrub(f"the password {PASSWORD} said back", (SECRET, PASSWORD)) == "the password *** said back"


def test_openai_key_goes_to_openai_only_unless_a_setting_names_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeOpenAI() as fake:  # a local server (llama.cpp, vLLM, Ollama all look like this)
        for backend in ("vllm", "openai"):
            out = synthesize(make_manifest(2), "P3", llm_args(fake, tmp_path / f"{backend}.sqlite", api_key=None,
                                                              backend=backend))
            assert (out["status"] == "ok").all()
        sent = [b["_authorization"] for b in fake.chat_bodies]
        assert sent and not any(SECRET in (s or "") for s in sent)
        fake.chat_bodies.clear()
        named = llm_args(fake, tmp_path / "named.sqlite", api_key=None, api_key_env="OPENAI_API_KEY")
        synthesize(make_manifest(1), "P3", named)
        assert [b["_authorization"] for b in fake.chat_bodies] == [f"Bearer {SECRET}"]
    assert to_openai(None) and to_openai("https://api.openai.com/v1") and not to_openai("http://127.0.0.1:8080/v1")
    official = replace(named, api_key_env=None, base_url=None)
    assert api_key("openai", official) == SECRET
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ValueError, match="notes.api_key_env names the environment variable OPENAI_API_KEY"):
        api_key("vllm", named)


def test_a_withheld_key_refused_with_401_says_how_to_name_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeOpenAI(api_key=SECRET) as fake:  # a proxy that does want the OpenAI key
        with pytest.raises(LLMAuthError, match="--set notes.api_key_env=OPENAI_API_KEY") as info:
            synthesize(make_manifest(1), "P3", llm_args(fake, tmp_path / "c.sqlite", api_key=None, backend="openai"))
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("url, warned", [("http://10.1.2.3:8000/v1", True), ("http://127.0.0.1:8000/v1", False),
                                         ("http://localhost:8000/v1", False), ("https://10.1.2.3/v1", False)])
def test_a_key_over_plain_http_to_another_machine_is_warned_about(tmp_path: Path, url: str, warned: bool) -> None:
    with FakeOpenAI() as fake:
        settings = llm_args(fake, tmp_path / "c.sqlite", base_url=url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        api_key("vllm", settings)
    shown = [str(w.message) for w in caught if "plain http" in str(w.message)]
    assert bool(shown) == warned and not any(SECRET in m for m in shown)
    with warnings.catch_warnings(record=True) as caught:  # no key, no credentials: nothing crosses the network
        warnings.simplefilter("always")
        api_key("vllm", replace(settings, api_key=None))
    assert not [w for w in caught if "plain http" in str(w.message)]
    credentials = replace(settings, api_key=None, base_url=_with_credentials(url))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        api_key("vllm", credentials)
    shown = [str(w.message) for w in caught if "plain http" in str(w.message)]
    assert bool(shown) == warned and _leaks(" ".join(shown)) == []


def test_no_base_url_is_openai_unless_openai_base_url_points_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert to_openai(None) and to_openai(["https://api.openai.com/v1"])
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1")  # the client's default, read by openai itself
    assert not to_openai(None)
