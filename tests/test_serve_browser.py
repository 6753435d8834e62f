"""``imagegen serve``'s page in a real headless Chromium (Playwright): draw an erase stroke on the canvas
with the mouse and complete it with every model (the known pixels come back unchanged), draw a sample grid,
cancel a long job, and check that the page asked nothing of any host but the server.

Needs Playwright's Python package and the system Chromium (/usr/bin/chromium, Debian's ``chromium``; .ci/run
installs both); without them the tests are skipped with the reason."""

from __future__ import annotations

import base64
import io
import os
import shutil
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

CHROMIUM = os.environ.get("IMAGEGEN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium, or set IMAGEGEN_CHROMIUM)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from imagegen.server import Limits, create_app, load_runs  # noqa: E402
from imagegen.server.background import BackgroundServer  # noqa: E402
from serve_fixtures import tiny_runs  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-default-apps", "--disable-sync"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = create_app(load_runs(tiny_runs(tmp_path_factory), device="cpu"), Limits(max_steps=2000))
    with BackgroundServer(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def requests_seen():
    return []


@pytest.fixture
def page(browser, server, requests_seen):
    pg = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    pg.on("request", lambda r: requests_seen.append(r.url))
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server.url + "/")
    pg.wait_for_selector("body[data-ready='1']", timeout=30_000)
    yield pg
    pg.close()
    assert not errors, errors  # no script error on the page


def wait_cards(pg, timeout_ms=120_000):
    pg.wait_for_function("() => document.querySelectorAll('.card').length > 0 && document.querySelectorAll("
                         "'.card:not(.done):not(.failed):not(.busy):not(.cancelled)').length === 0",
                         timeout=timeout_ms)


def decode_url(url: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
        return np.array(im)


def test_draw_a_stroke_and_every_model_completes_it_keeping_known_pixels(page, server):
    pg = page
    pg.click("#tabs button[data-tab=complete]")
    pg.wait_for_function("() => document.querySelector('#complete-source img.preview').naturalWidth > 0")
    form = "#complete-form"
    for name, value in (("steps", "3"), ("resample", "1"), ("restarts", "1"), ("iterations", "2")):
        pg.fill(f"{form} fieldset.options [name={name}]", value)
    pg.fill(f"{form} input[name=labels]", "3")  # the class-conditional VAE needs one
    box = pg.query_selector("#mask-canvas").bounding_box()
    # a stroke across the upper middle of the 256 px canvas: rows ~90..120 of 256 -> model rows ~5..7 of 16
    pg.mouse.move(box["x"] + 40, box["y"] + 100)
    pg.mouse.down()
    pg.mouse.move(box["x"] + 220, box["y"] + 110, steps=12)
    pg.mouse.up()
    pg.click("#complete-go")
    wait_cards(pg)
    cards = pg.query_selector_all("#complete-results .card")
    assert len(cards) == 4 and all("done" in c.get_attribute("class") for c in cards), \
        [c.inner_text() for c in cards]
    test0 = np.array(Image.open(io.BytesIO(httpx.get(f"{server.url}/api/runs/0/test-images/0").content)))
    for card in cards:
        assert len(card.query_selector_all("figure img")) == 3  # given, erased, filled
        job = httpx.get(f"{server.url}/api/jobs/{card.get_attribute('data-job')}").json()
        res = job["result"]
        given = decode_url(res["inputs"]["image"])
        keep = decode_url(res["inputs"]["mask"]) == 255
        assert np.array_equal(given, test0)  # the picked test image, as the model saw it
        assert 0 < (~keep).sum() < keep.size // 2  # the stroke erased a band, not everything
        rows = np.nonzero((~keep).any(1))[0]
        assert rows.min() >= 4 and rows.max() <= 8, rows  # where it was drawn
        filled = decode_url(res["images"][0])
        assert np.array_equal(filled[keep], given[keep])  # known pixels exactly as they were


def test_undo_and_presets_change_the_mask(page):
    pg = page
    pg.click("#tabs button[data-tab=complete]")
    count = ("() => { const c = document.querySelector('#mask-canvas'); const g = c.getContext('2d');"
             " const d = g.getImageData(0, 0, c.width, c.height).data; let red = 0;"
             " for (let i = 0; i < d.length; i += 4) if (d[i] > d[i + 1] + 60) red++; return red; }")
    before = pg.evaluate(count)
    pg.click("button[data-preset=erase-centre-square]")
    after = pg.evaluate(count)
    assert after > before + 10_000  # a 128 x 128 red square on the 256 x 256 canvas
    pg.click("#undo")
    assert pg.evaluate(count) == before


def test_sample_grid_from_the_page(page, server):
    pg = page
    pg.select_option("#sample-form select[name=run]", label="1: gan-digits (gan)")
    pg.fill("#sample-form input[name=n]", "9")
    pg.click("#sample-go")
    wait_cards(pg)
    card = pg.query_selector("#sample-results .card.done")
    assert card is not None, pg.inner_text("#sample-results")
    imgs = card.query_selector_all(".grid img")
    assert len(imgs) == 9
    sizes = pg.eval_on_selector_all("#sample-results .grid img",
                                    "els => els.map(e => [e.naturalWidth, e.naturalHeight])")
    assert sizes == [[16, 16]] * 9
    cols = pg.eval_on_selector("#sample-results .grid",
                               "g => getComputedStyle(g).gridTemplateColumns.split(' ').length")
    assert cols == 3
    links = [a.get_attribute("href") for a in card.query_selector_all(".downloads a")]
    assert any(h.endswith("grid.png") for h in links) and any(h.endswith("images.npz") for h in links)
    assert httpx.get(server.url + links[0]).status_code == 200


def test_a_long_job_shows_progress_and_is_cancelled_from_the_page(page):
    pg = page
    pg.select_option("#sample-form select[name=run]", label="3: diffusion-digits (diffusion)")
    pg.fill("#sample-form fieldset.options [name=steps]", "2000")
    pg.click("#sample-go")
    pg.wait_for_function("() => /network ops/.test(document.querySelector('#sample-results .job-status')"
                         ".textContent)", timeout=60_000)
    pg.click("#sample-results button.cancel")
    pg.wait_for_selector("#sample-results .card.cancelled", timeout=60_000)
    assert "cancelled" in pg.inner_text("#sample-results .job-status")
    # the page stays responsive: the next request runs
    pg.fill("#sample-form fieldset.options [name=steps]", "2")
    pg.fill("#sample-form input[name=n]", "4")
    pg.click("#sample-go")
    pg.wait_for_selector("#sample-results .card.done", timeout=60_000)


def test_the_page_asked_only_the_server(page, requests_seen, server):
    page.click("#tabs button[data-tab=info]")  # the training grids: more images to load
    page.wait_for_selector("#info-body img.training-grid")
    assert len(requests_seen) > 10
    origin = urlparse(server.url).netloc
    foreign = [u for u in requests_seen if urlparse(u).scheme not in ("data", "blob") and urlparse(u).netloc != origin]
    assert not foreign, foreign
