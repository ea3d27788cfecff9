"""The web page at `/` in a real browser.

Debian's chromium (headless, driven by Playwright for Python) loads the page from a real
uvicorn server on 127.0.0.1 serving `create_app` with a tiny model, uploads a clip, and
checks what a person would see: the top tags with the service's scores, the taggram drawn
on its canvas, the marker following playback, clicking the taggram to seek, the key
prompt when the service needs one, and a dropped broken file reported in one line. Without
Playwright or chromium those tests skip; the check that the page's assets are all the
package's own (nothing from a CDN) runs everywhere.

`SAMPLECNN_SCREENSHOT=docs/img/serve.png` also saves the README's screenshot (with the
real MagnaTagATune clip when ../shared is there, and the checkpoint named by
`SAMPLECNN_SCREENSHOT_CKPT` instead of the tiny model when set).

Over 450 lines: every scenario shares the live servers, the browser, the clip and the
page helpers (state waits, pixel reads), which a split would have to repeat.
"""
from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
TAGS = ["guitar", "drums", "piano", "techno", "vocals", "quiet", "loud", "ambient",
        "rock", "fast", "slow", "strings", "synth", "beat"]
ROWS = 12    # taggram rows the page draws (the clip's best tags)
TOP_K = 10   # bars the page lists
TIMEOUT_MS = 30_000

import uvicorn  # noqa: E402

from samplecnn.models import create_model  # noqa: E402
from samplecnn.service import create_app  # noqa: E402
from samplecnn.tagging import Tagger  # noqa: E402


class LiveServer:
    """uvicorn serving `app` on a free loopback port in a background thread."""

    def __init__(self, app):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        config = uvicorn.Config(app, log_level="error", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def start(self) -> "LiveServer":
        self.thread.start()
        return self

    def wait_ready(self) -> "LiveServer":
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 60 s")
            time.sleep(0.02)
        return self

    def __enter__(self):
        return self.start().wait_ready()

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
        assert not self.thread.is_alive(), "uvicorn did not shut down within 30 s"


@pytest.fixture(scope="module")
def tagger():
    model = create_model("samplecnn_small", width=0.125, tags=TAGS, seed=0).eval()
    return Tagger.from_model(model, backend="plain", batch_size=8)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """6 s of a tone that swells and a noise burst: scores that change over time."""
    import soundfile as sf

    sr = 16000
    t = np.arange(6 * sr) / sr
    rng = np.random.default_rng(0)
    x = 0.4 * np.sin(2 * np.pi * 330 * t) * np.clip(t / 3, 0, 1)
    x[3 * sr:4 * sr] += 0.5 * rng.standard_normal(sr)
    path = tmp_path_factory.mktemp("page") / "tone and noise.wav"
    sf.write(path, x.astype(np.float32), sr)
    return path


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    if not CHROMIUM.is_file():
        pytest.skip(f"no browser: {CHROMIUM} is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                               args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def servers(tagger):
    """An open service and one with a key (and a 1 MB upload limit), started together:
    each spawns its decoding process."""
    live = {"open": LiveServer(create_app(tagger)),
            "keyed": LiveServer(create_app(tagger, api_key="s3cret key", max_upload_mb=1))}
    try:
        for s in live.values():
            s.start()
        for s in live.values():
            s.wait_ready()
        yield live
    finally:
        for s in live.values():
            if s.thread.is_alive():
                s.__exit__(None, None, None)


@pytest.fixture(scope="module")
def server(servers):
    return servers["open"]


class PageLog:
    """Everything a page asked for and complained about."""

    def __init__(self, page):
        self.requests, self.errors = [], []
        page.on("request", lambda r: self.requests.append(r))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)


def wait_done(page) -> None:
    """Bounded wait for the page to finish a file; its one-line error if it failed."""
    page.wait_for_function("['done', 'error'].includes(document.body.dataset.state)",
                           timeout=TIMEOUT_MS)
    state = page.evaluate("document.body.dataset.state")
    assert state == "done", f"the page reports: {page.inner_text('#error')}"


def pixel(page, x: float, y: float) -> tuple[int, int, int, int]:
    """The canvas pixel under CSS position (x, y) of the canvas."""
    return tuple(page.evaluate(
        """([x, y]) => { const c = document.getElementById('taggram');
             const k = c.width / c.clientWidth;
             return Array.from(c.getContext('2d').getImageData(Math.round(x * k), Math.round(y * k), 1, 1).data); }""",
        [x, y]))


def luminance(rgba) -> float:
    r, g, b, _ = rgba
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_page_assets_are_the_packages_own(tagger):
    """Offline: every file the page references is served by the package, and no static
    file points anywhere else (no CDN, no web font)."""
    import asyncio

    import httpx

    from samplecnn.service.app import STATIC_DIR

    async def fetch(paths):  # through the ASGI app; no lifespan: nothing is scored here
        transport = httpx.ASGITransport(app=create_app(tagger))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return {p: await client.get(p) for p in paths}

    page = asyncio.run(fetch(["/"]))["/"]
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assets = [r for r in refs if r.startswith("static/")]
    assert {"static/app.js", "static/app.css", "static/icon.svg"} <= set(assets)
    kinds = {".js": "javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    answers = asyncio.run(fetch(["/" + ref for ref in assets]))
    for ref in assets:
        got = answers["/" + ref]
        assert got.status_code == 200, ref
        assert kinds[Path(ref).suffix] in got.headers["content-type"], ref
    # the other links are the service's own pages
    assert all(not re.match(r"[a-z]+:|//", r) for r in refs), refs
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8").replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"https?://|url\(\s*['\"]?//|@import|@font-face", text), path.name
    # the API calls are relative too: the page works under a proxy's path prefix
    js = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    calls = re.findall(r"""["'`](/?v1/[a-z]+)""", js)
    assert set(calls) == {"v1/model", "v1/tag", "v1/taggram"}, calls


def test_page_tags_a_clip_and_follows_playback(browser, server, tagger, clip):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    log = PageLog(page)
    page.goto(server.url)
    page.wait_for_function(f"document.getElementById('model').textContent.includes('{len(TAGS)} tags')",
                           timeout=TIMEOUT_MS)
    # keyboard: Tab reaches the file input, which the label styles as the drop area
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "file":
            break
    assert page.evaluate("document.activeElement.id") == "file"

    # what the progress indicator does on the way: upload fractions, then "scoring"
    page.evaluate("""() => { window.seen = [];
        const p = document.getElementById('progress');
        new MutationObserver(() => window.seen.push([document.body.dataset.state,
            p.hasAttribute('value') ? 'bar' : 'indeterminate'])).observe(document.body,
            {attributes: true, attributeFilter: ['data-state']}); }""")
    page.set_input_files("#file", str(clip))
    wait_done(page)
    seen = [tuple(x) for x in page.evaluate("window.seen")]
    seen = [x for i, x in enumerate(seen) if i == 0 or x != seen[i - 1]]
    assert [state for state, _ in seen] == ["uploading", "scoring", "done"], seen
    assert seen[0][1] == "bar" and seen[1][1] == "indeterminate", seen
    assert page.is_hidden("#progress-row")

    # the bars show the service's scores: compare with an independent in-process tagging
    expected = tagger.tag(str(clip), top_k=TOP_K)
    rows = page.eval_on_selector_all(
        "#tags li", "lis => lis.map(li => [li.querySelector('.tag-name').textContent,"
                    " li.querySelector('.tag-score').textContent, li.querySelector('.tag-fill').style.width])")
    assert [r[0] for r in rows] == [t for t, _ in expected["top"]]
    for (_, shown, width), (_, score) in zip(rows, expected["top"]):
        assert float(shown) == pytest.approx(score, abs=6e-4)
        assert float(width.rstrip("%")) == pytest.approx(100 * score, abs=0.06)
    assert page.inner_text("#file-name") == clip.name

    # the taggram: as many columns as the service's windows at the hop the page asked for
    taggram_req = [r for r in log.requests if "/v1/taggram" in r.url]
    assert len(taggram_req) == 1
    hop = float(taggram_req[0].url.split("hop=")[1])
    tg = tagger.taggram(str(clip), hop=hop)
    canvas = page.locator("#taggram")
    assert canvas.get_attribute("data-rows") == str(ROWS)
    assert canvas.get_attribute("data-windows") == str(len(tg.start_s))
    plot = page.evaluate("JSON.parse(document.getElementById('taggram').dataset.plot)")
    # row 0 is the clip's best tag; a brighter cell where its score is higher (viridis)
    best = TAGS.index(expected["top"][0][0])
    col = tg.scores[:, best]
    lo, hi = int(np.argmin(col)), int(np.argmax(col))
    assert col[hi] - col[lo] > 0.02, "the test clip should give scores that change over time"

    def cell(i):
        t = (tg.start_s[i] + tg.end_s[i]) / 2
        return pixel(page, plot["x"] + t / tg.duration_s * plot["w"], plot["y"] + 5)

    assert cell(lo)[3] == 255 and cell(hi)[3] == 255
    assert luminance(cell(hi)) > luminance(cell(lo))
    # hovering a cell names its tag and score
    box = canvas.bounding_box()
    t_hi = (tg.start_s[hi] + tg.end_s[hi]) / 2
    page.mouse.move(box["x"] + plot["x"] + t_hi / tg.duration_s * plot["w"], box["y"] + plot["y"] + 5)
    title = canvas.get_attribute("title")
    assert title.startswith(expected["top"][0][0] + " at ")
    assert float(title.rsplit(": ", 1)[1]) == pytest.approx(col[hi], abs=6e-4)

    # play: the marker follows (read twice, bounded waits)
    page.evaluate("document.getElementById('player').play()")
    page.wait_for_function("document.getElementById('player').currentTime > 0.3", timeout=TIMEOUT_MS)
    first = page.eval_on_selector("#marker", "m => parseFloat(m.style.left)")
    page.wait_for_function(f"parseFloat(document.getElementById('marker').style.left) > {first} + 2",
                           timeout=TIMEOUT_MS)
    second = page.eval_on_selector("#marker", "m => parseFloat(m.style.left)")
    assert plot["x"] < first < second <= plot["x"] + plot["w"]
    page.evaluate("document.getElementById('player').pause()")

    # clicking the taggram seeks the player there, and the marker goes with it
    page.mouse.click(box["x"] + plot["x"] + 0.75 * plot["w"], box["y"] + plot["y"] + 10)
    page.wait_for_function("Math.abs(document.getElementById('player').currentTime - "
                           f"{0.75 * tg.duration_s}) < 0.1", timeout=TIMEOUT_MS)
    left = page.eval_on_selector("#marker", "m => parseFloat(m.style.left)")
    assert left == pytest.approx(plot["x"] + 0.75 * plot["w"], abs=1.5)
    # ... and so do the arrow keys on the focused taggram (one window per press)
    canvas.focus()
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("Math.abs(document.getElementById('player').currentTime - "
                           f"{0.75 * tg.duration_s - tagger.window_s}) < 0.1", timeout=TIMEOUT_MS)

    # narrow screens: no sideways scrolling, the taggram redrawn to fit
    page.set_viewport_size({"width": 360, "height": 800})
    page.wait_for_function("JSON.parse(document.getElementById('taggram').dataset.plot).w < 300",
                           timeout=TIMEOUT_MS)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    marker = page.locator("#marker").bounding_box()
    assert marker["x"] + marker["width"] <= 360

    # one upload per endpoint (the player plays the local file), nothing from elsewhere
    posts = [r for r in log.requests if r.method == "POST"]
    assert sorted(r.url.split("?")[0].removeprefix(server.url) for r in posts) == ["v1/tag", "v1/taggram"]
    assert all(r.url.startswith((server.url, "blob:", "data:")) for r in log.requests), \
        [r.url for r in log.requests]
    assert log.errors == []
    page.close()


def test_dropped_broken_file_is_reported_in_one_line(browser, server):
    page = browser.new_page()
    page.goto(server.url)
    page.wait_for_function("document.body.dataset.state === 'ready'", timeout=TIMEOUT_MS)
    # dropped, not chosen: the drop path of the page
    transfer = page.evaluate_handle("""() => { const dt = new DataTransfer();
        dt.items.add(new File(['RIFF\\0\\0\\0\\0WAVEnot audio at all'], 'broken.wav', {type: 'audio/wav'}));
        return dt; }""")
    page.dispatch_event("#drop", "dragenter", {"dataTransfer": transfer})
    assert "over" in page.get_attribute("#drop", "class")
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    assert "over" not in page.get_attribute("#drop", "class")
    page.wait_for_function("document.body.dataset.state === 'error'", timeout=TIMEOUT_MS)
    message = page.inner_text("#error")
    assert message.startswith("broken.wav: ") and "the service answered" not in message, message
    assert "audio" in message, message  # the service's own one-line reason
    assert "\n" not in message
    assert page.is_hidden("#result")
    page.close()


def test_page_asks_for_the_key_and_sends_it(browser, servers, clip, tmp_path):
    live = servers["keyed"]
    page = browser.new_page()
    log = PageLog(page)
    page.goto(live.url)
    page.wait_for_selector("#key-form", state="visible", timeout=TIMEOUT_MS)
    assert page.is_hidden("#result")

    page.fill("#key", "wrong")
    page.press("#key", "Enter")
    page.wait_for_function("document.getElementById('error').textContent.includes('refused')",
                           timeout=TIMEOUT_MS)
    assert page.is_visible("#key-form")

    page.fill("#key", "s3cret key")
    page.click("#key-form button")
    page.wait_for_selector("#key-form", state="hidden", timeout=TIMEOUT_MS)

    # over the service's upload limit: said at once, nothing sent
    big = tmp_path / "big.wav"
    big.write_bytes(bytes(1_200_000))
    page.set_input_files("#file", str(big))
    page.wait_for_function("document.body.dataset.state === 'error'", timeout=TIMEOUT_MS)
    assert "limit of 1 MB" in page.inner_text("#error")
    assert not [r for r in log.requests if r.method == "POST"]

    page.set_input_files("#file", str(clip))
    wait_done(page)
    assert page.locator("#tags li").count() == TOP_K
    api = [r for r in log.requests if "/v1/" in r.url]
    last = [r for r in api if r.method == "POST"] + api[-1:]
    assert all(r.headers.get("authorization") == "Bearer s3cret key" for r in last)

    # the key lasts for the tab: a reload does not ask again
    page.reload()
    page.wait_for_function("document.body.dataset.state === 'ready'", timeout=TIMEOUT_MS)
    assert page.is_hidden("#key-form")
    page.close()


def test_api_docs_are_served_offline_and_declare_the_key(tagger):
    """`/docs` is Swagger UI from the package's own files; a keyed service declares its
    bearer key in /openapi.json (so "Authorize" appears), an open one declares none."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    async def get(app, paths):  # through the ASGI app; no lifespan: nothing is scored here
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return {p: await client.get(p) for p in paths}

    def fetch(app, paths):  # a thread of its own: Playwright's event loop may run in this one
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, get(app, paths)).result()

    open_app, keyed_app = create_app(tagger), create_app(tagger, api_key="k")
    got = fetch(open_app, ["/docs", "/redoc", "/openapi.json"])
    assert got["/docs"].status_code == 200 and "text/html" in got["/docs"].headers["content-type"]
    assert got["/redoc"].status_code == 404          # ReDoc would need a CDN
    refs = re.findall(r'(?:src|href|url)\s*[=:]\s*["\']([^"\']+)', got["/docs"].text)
    # Relative, so resolved against the page's address (issue 19.10): never built from the
    # Host / X-Forwarded-Proto headers.
    assert refs and not any(r.startswith(("http:", "https:", "//", "/")) for r in refs), refs
    from urllib.parse import urljoin

    assets = fetch(open_app, [urljoin("/docs", r) for r in refs])
    for path, answer in assets.items():
        assert answer.status_code == 200, path
    js = next(a for p, a in assets.items() if p.endswith(".js"))
    assert "javascript" in js.headers["content-type"] and len(js.content) > 500_000
    assert "securitySchemes" not in got["/openapi.json"].text

    async def spoofed(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/docs", headers={"Host": "evil.example",
                                                      "X-Forwarded-Proto": "https"})

    with ThreadPoolExecutor(1) as pool:
        page = pool.submit(asyncio.run, spoofed(open_app)).result().text
    assert "evil.example" not in page and "http://" not in page and "https://" not in page
    schema = fetch(keyed_app, ["/openapi.json"])["/openapi.json"].json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert schema["paths"]["/v1/tag"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]


def test_api_docs_work_in_a_browser_offline_with_the_key(browser, servers):
    """Chromium with every request off this machine refused: the docs render, and "Try it
    out" on /v1/model with the key typed into "Authorize" gets the model's answer."""
    live = servers["keyed"]
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    log = PageLog(page)
    outside = []

    def route(r):
        if r.request.url.startswith(live.url):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(live.url + "docs")
    page.wait_for_selector(".opblock-summary-path", timeout=TIMEOUT_MS)
    paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent)")
    assert {"/healthz", "/v1/model", "/v1/tag", "/v1/taggram", "/v1/embed"} <= set(paths), paths

    page.click("button.authorize")
    page.fill(".modal-ux input[type=text], .modal-ux input[type=password]", "s3cret key")
    page.click(".modal-ux button.authorize")
    page.click(".modal-ux button.close-modal")
    model = page.locator(".opblock-get", has=page.locator(".opblock-summary-path", has_text="/v1/model"))
    model.locator(".opblock-summary").click()
    model.locator("button.execute").click()
    answer = model.locator(".live-responses-table tbody .response")
    answer.locator(".response-col_status").wait_for(timeout=TIMEOUT_MS)
    status = answer.locator(".response-col_status").first.inner_text()
    body = answer.locator(".highlight-code").first.inner_text()
    assert status.strip() == "200", body
    assert '"auth_required": true' in body and f'"{TAGS[-1]}"' in body, body
    assert outside == [] and log.errors == [], (outside, log.errors)
    page.close()


@pytest.mark.skipif(not os.environ.get("SAMPLECNN_SCREENSHOT"),
                    reason="SAMPLECNN_SCREENSHOT=path saves the README's screenshot")
def test_screenshot(browser, tagger, clip, tmp_path):
    """The README's picture: the real clip and a trained checkpoint when available."""
    ckpt = os.environ.get("SAMPLECNN_SCREENSHOT_CKPT")
    shot_tagger = Tagger.from_checkpoint(ckpt) if ckpt else tagger
    real = Path(__file__).resolve().parents[2] / "shared/data/real/joram-moments_of_clarity-08-solipsism-59-88.mp3"
    audio = real if real.is_file() else clip
    name = Path(ckpt).stem if ckpt else "tiny-untrained"  # as `samplecnn serve` names it
    with LiveServer(create_app(shot_tagger, name=name)) as live:
        page = browser.new_page(viewport={"width": 1180, "height": 720}, device_scale_factor=1)
        page.goto(live.url)
        page.wait_for_function("document.body.dataset.state === 'ready'", timeout=TIMEOUT_MS)
        page.set_input_files("#file", str(audio))
        wait_done(page)
        page.wait_for_function("document.getElementById('player').readyState >= 1", timeout=TIMEOUT_MS)
        page.evaluate("""() => { const p = document.getElementById('player');
                                 p.currentTime = p.duration * 0.4; }""")
        page.wait_for_function("document.getElementById('marker').dataset.time > 1", timeout=TIMEOUT_MS)
        out = Path(os.environ["SAMPLECNN_SCREENSHOT"])
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        assert out.stat().st_size > 10_000
        page.close()


def test_page_highlights_the_decided_tags(browser, clip):
    """A model with thresholds: the page lists `labels` and marks their bars (the others
    muted), with each tag's threshold as a tick on its bar."""
    import json

    from samplecnn.thresholds import Thresholds

    model = create_model("samplecnn_small", width=0.125, tags=TAGS, seed=0).eval()
    rec = Tagger.from_model(model, backend="plain", batch_size=8).tag(str(clip), top_k=TOP_K)
    top = [t for t, _ in rec["top"]]
    scores = rec["tags"]
    values = np.array([scores[t] + 0.01 for t in TAGS])
    for t in (top[0], top[2]):  # the best and the third best are decided
        values[TAGS.index(t)] = scores[t] - 0.01
    model.thresholds = Thresholds(np.clip(values, 0, 1), TAGS, split="valid")
    tagger = Tagger.from_model(model, backend="plain", batch_size=8)
    expected = tagger.tag(str(clip), top_k=TOP_K)["labels"]
    assert expected == [top[0], top[2]]
    with LiveServer(create_app(tagger)) as live:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        log = PageLog(page)
        page.goto(live.url)
        page.wait_for_function(f"document.getElementById('model').textContent.includes('{len(TAGS)} tags')",
                               timeout=TIMEOUT_MS)
        page.set_input_files("#file", str(clip))
        wait_done(page)
        assert json.loads(page.get_attribute("#tags", "data-labels")) == expected
        chips = page.eval_on_selector_all("#labels .label-chip", "els => els.map(e => e.textContent)")
        assert chips == expected
        rows = page.eval_on_selector_all(
            "#tags li", "lis => lis.map(li => [li.classList.contains('decided'),"
                        " getComputedStyle(li.querySelector('.tag-fill')).backgroundColor,"
                        " parseFloat(li.querySelector('.tag-threshold').style.left)])")
        assert [decided for decided, _, _ in rows] == [t in expected for t in top]
        colours = {decided: {c for d, c, _ in rows if d == decided} for decided in (True, False)}
        assert len(colours[True]) == 1 and len(colours[False]) == 1 and colours[True] != colours[False]
        for (_, _, left), t in zip(rows, top):
            assert left == pytest.approx(100 * float(np.float32(values[TAGS.index(t)])), abs=0.06)
        assert log.errors == []
        page.close()
