"""Screenshots of ``imagegen serve``'s page for the docs (docs/img/serve-*.png), taken in headless Chromium
through Playwright, each panel used as a user would: a sample grid, a completion drawn with the mouse, a
restoration, an interpolation strip, a comparison and a run's info.

    python benchmarks/serve_screenshots.py runs/vae-digits runs/gan-digits runs/pixelcnn-digits \
        runs/diffusion-digits --out docs/img

Needs the playwright Python package and a Chromium (--chromium, default /usr/bin/chromium). The screenshots
are saved as 128-colour PNGs to keep the repository small.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from _bench import run_main  # benchmarks/_bench.py, beside this script

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
WAIT = ("() => document.querySelectorAll('.card').length > 0 && document.querySelectorAll("
        "'.card:not(.done):not(.failed):not(.busy):not(.cancelled)').length === 0")


def _save(pg, path: Path, selector: str = "main") -> None:
    from PIL import Image

    pg.wait_for_timeout(200)
    pg.locator(selector).screenshot(path=str(path))
    with Image.open(path) as im:
        im.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def _family_run(runs, family):
    return next((r for r in runs if r.model.family == family), runs[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--diffusion-steps", type=int, default=20, help="steps in the screenshots' diffusion requests")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from imagegen.server import create_app, load_runs
    from imagegen.server.background import BackgroundServer

    runs = load_runs(args.runs, device=args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    steps = str(args.diffusion_steps)
    with BackgroundServer(create_app(runs)) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=ARGS)
        pg = browser.new_page(viewport={"width": 1180, "height": 760})
        pg.goto(srv.url + "/")
        pg.wait_for_selector("body[data-ready='1']", timeout=60_000)

        # Sample: a grid from the VAE (balanced labels when it is class-conditional)
        diff = _family_run(runs, "diffusion")
        pg.select_option("#sample-form select[name=run]", value=str(_family_run(runs, "vae").index))
        pg.dispatch_event("#sample-form select[name=run]", "change")
        pg.click("#sample-go")
        pg.wait_for_function(WAIT, timeout=600_000)
        _save(pg, args.out / "serve-sample.png")

        # Complete: a stroke drawn with the mouse over a test image, every model fills it
        pg.click("#tabs button[data-tab=complete]")
        pg.wait_for_function("() => document.querySelector('#complete-source img.preview').naturalWidth > 0")
        pg.fill("#complete-form input[name=labels]", "")
        pg.fill("#complete-source input[type=number]", "3")
        pg.dispatch_event("#complete-source input[type=number]", "change")
        pg.wait_for_timeout(500)
        box = pg.query_selector("#mask-canvas").bounding_box()
        pg.mouse.move(box["x"] + 30, box["y"] + 150)
        pg.mouse.down()
        pg.mouse.move(box["x"] + 230, box["y"] + 120, steps=15)
        pg.mouse.up()
        label = re.search(r"label (\d+)", pg.inner_text("#complete-source .hint"))
        pg.fill("#complete-form input[name=labels]", label.group(1) if label else "")  # conditional models
        if diff.model.family == "diffusion":
            pg.fill("#complete-form fieldset.options [name=steps]", steps)
        pg.click("#complete-go")
        pg.wait_for_function(WAIT, timeout=600_000)
        _save(pg, args.out / "serve-complete.png")

        # Restore: super-resolution x2 with a pixel-space run (a latent one restores by inpainting only), else
        # denoising with the diffusion run
        pixel = next((r for r in runs if r.model.first_stage is None and r.model.family != "pixelcnn"), None)
        if pixel is not None or any(r.model.family == "diffusion" for r in runs):
            pg.click("#tabs button[data-tab=restore]")
            pg.wait_for_timeout(500)
            if pixel is not None:
                pg.select_option("#restore-form select[name=run]", value=str(pixel.index))
                pg.dispatch_event("#restore-form select[name=run]", "change")
                pg.wait_for_timeout(300)
                if "sr2" in pg.eval_on_selector_all("#restore-task option", "os => os.map(o => o.value)"):
                    pg.select_option("#restore-task", value="sr2")
                    pg.dispatch_event("#restore-task", "change")
            if pg.locator("#restore-form fieldset.options [name=steps]").count():
                pg.fill("#restore-form fieldset.options [name=steps]", steps)
            pg.click("#restore-go")
            pg.wait_for_function(WAIT, timeout=600_000)
            _save(pg, args.out / "serve-restore.png")

        # Interpolate: between two test images through the VAE (seeds for a GAN or diffusion run without one)
        vae = _family_run(runs, "vae")
        pg.click("#tabs button[data-tab=interpolate]")
        pg.select_option("#interpolate-form select[name=run]", value=str(vae.index))
        pg.fill("#interpolate-form input[name=frames]", "10")
        if "images" in pg.eval_on_selector_all("#interp-mode option", "os => os.map(o => o.value)"):
            pg.select_option("#interp-mode", value="images")
            pg.fill("#interpolate-form input[name=labels]", "0" if vae.model.class_conditional else "")
            pg.wait_for_timeout(800)
        pg.click("#interpolate-go")
        pg.wait_for_function(WAIT, timeout=600_000)
        _save(pg, args.out / "serve-interpolate.png")

        # Compare: the same request to every run
        pg.click("#tabs button[data-tab=compare]")
        pg.fill("#compare-form input[name=n]", "16")
        if diff.model.family == "diffusion":
            pg.fill("#compare-form fieldset.options [name=steps]", steps)
        pg.click("#compare-go")
        pg.wait_for_function(WAIT, timeout=600_000)
        _save(pg, args.out / "serve-compare.png")

        # Info: config, checkpoint and training grids
        pg.click("#tabs button[data-tab=info]")
        pg.wait_for_timeout(800)
        pg.set_viewport_size({"width": 1180, "height": 560})
        _save(pg, args.out / "serve-info.png", "body")
        browser.close()


if __name__ == "__main__":
    run_main(main)
