"""The browser playground of ``rnnkit serve`` in headless Chromium (Playwright, system browser).

A tiny untrained char language model is served by the real app (uvicorn on loopback, a thread);
the page types into the keyboard and must show the model's top words, then streams a greedy
generation that must equal ``model.generate``. Screenshots go to the test's ``tmp_path``.
Skipped, with the reason, where Playwright or a Chromium binary is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[1] / "rnnkit" / "server" / "static"
TIMEOUT_MS = 10_000  # every browser wait is bounded


def _chromium() -> str | None:
    """The system Chromium: $RNNKIT_CHROMIUM, else `chromium` / `chromium-browser` on PATH."""
    env = os.environ.get("RNNKIT_CHROMIUM")
    if env and Path(env).is_file():
        return env
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def model():
    import torch

    from rnnkit.data.vocab import Vocab
    from rnnkit.tasks.language_model import LanguageModelConfig, build_language_model

    torch.manual_seed(0)
    config = LanguageModelConfig(hidden_size=16, embed_size=8)
    return build_language_model(config, Vocab("abcdefgh \n")).eval()


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def test_static_files_are_local_only():
    """The page loads nothing from outside the server (no CDN, no external fonts)."""
    for name in ("index.html", "playground.js", "playground.css"):
        text = (STATIC / name).read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text, name
    index = (STATIC / "index.html").read_text(encoding="utf-8")
    assert 'src="/static/playground.js"' in index and 'href="/static/playground.css"' in index


def test_playground_keyboard_and_streamed_generation(model, tmp_path, live_server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright for Python")
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no Chromium browser (install Debian's `chromium` or set RNNKIT_CHROMIUM)")
    from rnnkit.server import build_app

    app = build_app({"tiny": model})
    expected_text = model.generate("ab", length=20, temperature=0)
    assert expected_text, "the tiny model generated nothing to compare against"

    with live_server(app) as url:
        # the model's top words after "abc ", as the server's own keyboard session gives them
        session = _post(url + "/v1/sessions", {"model": "tiny", "text": "", "k": 3})
        fed = _post(f"{url}/v1/sessions/{session['id']}/feed", {"text": "abc "})
        expected_words = [s["word"] for s in fed["suggestions"]]
        assert expected_words, "the model suggested no words"
        assert expected_words == [s["word"] for s in model.complete("abc ", k=3)]

        with sync_api.sync_playwright() as p:
            try:
                browser = p.chromium.launch(executable_path=browser_path, headless=True,
                                            args=["--no-sandbox", "--disable-gpu"],
                                            timeout=TIMEOUT_MS)  # fmt: skip
            except sync_api.Error as e:  # a browser that cannot start here
                pytest.skip(f"Chromium at {browser_path} does not start: {str(e).splitlines()[0]}")
            try:
                page = browser.new_page(viewport={"width": 1000, "height": 900})
                page.set_default_timeout(TIMEOUT_MS)
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                # only loopback traffic: anything else the page asks for is refused
                page.route("**/*", lambda route: route.continue_()
                           if route.request.url.startswith(url) else route.abort())  # fmt: skip
                page.goto(url + "/")
                page.wait_for_selector("body[data-ready=true]")
                tabs = page.locator("#tabs [role=tab]").all_text_contents()
                assert tabs == ["Keyboard", "Generate", "Rank"], tabs

                # --- keyboard: the suggestion bar shows the model's top words -----------------
                page.click("#tab-keyboard")
                page.wait_for_selector("#suggestions .suggestion")  # the empty-text session
                page.locator("#keyboard-input").press_sequentially("abc ", delay=30)
                page.wait_for_selector('#suggestions[data-text="abc "]')
                page.wait_for_function(
                    """(words) => {
                        const got = [...document.querySelectorAll('#suggestions .suggestion')]
                            .map((b) => b.textContent);
                        return JSON.stringify(got) === JSON.stringify(words);
                    }""",
                    arg=expected_words,
                )
                shown = page.locator("#suggestions .suggestion").all_text_contents()
                assert shown == expected_words
                page.screenshot(path=tmp_path / "keyboard.png")

                # --- generate: greedy, streamed into #gen-output --------------------------------
                page.click("#tab-generate")
                page.fill("#gen-prompt", "ab")
                page.fill("#gen-max", "20")
                page.locator("#gen-temp").evaluate(
                    "(el) => { el.value = '0'; el.dispatchEvent(new Event('input')); }"
                )
                page.click("#gen-start")
                page.wait_for_function(
                    "() => document.querySelector('#gen-output').textContent.length > 0"
                )
                page.wait_for_function(
                    "() => document.querySelector('#gen-output').dataset.done === 'true'"
                )
                assert page.text_content("#gen-output") == expected_text
                assert "tokens/s" in page.text_content("#gen-rate")
                assert page.locator(".panel:not([hidden]) .error:not([hidden])").count() == 0
                page.screenshot(path=tmp_path / "generate.png")
                assert errors == [], errors
            finally:
                browser.close()

    for name in ("keyboard.png", "generate.png"):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0
