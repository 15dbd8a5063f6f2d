"""Screenshot of the Predict tab for the README: the real app and the served model, on scikit-image's astronaut.

    python tools/screenshot.py                                  # writes docs/figures/predict.png
    python tools/screenshot.py --out /tmp/predict.png --width 1200

Run it again, then commit docs/figures/predict.png, whenever the served model changes (models/current.json): the
picture shows that model's name and probabilities.

It builds the app as `python app.py` does (`app.build_demo` around the model `models/current.json` names, or the one
in FER_MODELS_DIR), serves it on a free loopback port inside this process, and drives Debian's Chromium
(`apt-get install chromium`; CHROMIUM_PATH overrides /usr/bin/chromium) through Playwright, as tests/test_browser.py
does. It uploads scikit-image's astronaut photo to the Predict tab, waits until the first face's four probabilities
are shown, and saves the page from the served model's line down to the face panels, `--width` pixels wide. The PNG is
reduced to a 256-colour palette so the README's picture stays small (under 300 KB).
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "figures" / "predict.png"
WIDTH = 1200  # CSS pixels at scale 1: the PNG's width
COLOURS = 256  # palette size: a screenshot of two photos stays well under 300 KB
MARGIN = 12  # pixels kept around the captured region
TIMEOUT_MS = 120_000  # the first TensorFlow call on a busy machine takes a while


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _chromium() -> Path:
    path = Path(os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium")
    if not path.is_file():
        raise FileNotFoundError(f"No Chromium at {path}: install it with `apt-get install -y chromium` (Debian), "
                                "or set CHROMIUM_PATH.")
    return path


def capture(predictor, out: Path = OUT, width: int = WIDTH) -> Path:
    """Serve the app around `predictor`, classify the astronaut on the Predict tab in Chromium and save the PNG."""
    import app
    import numpy as np
    from PIL import Image
    from playwright.sync_api import sync_playwright
    from skimage import data

    chromium_path = _chromium()
    demo = app.build_demo(predictor)
    _, url, _ = app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(),
                           quiet=True)
    try:
        with tempfile.TemporaryDirectory(prefix="fer-screenshot-") as folder, sync_playwright() as playwright:
            photo = Path(folder) / "astronaut.png"
            Image.fromarray(np.ascontiguousarray(data.astronaut())).save(photo)
            browser = playwright.chromium.launch(executable_path=str(chromium_path), headless=True,
                                                 args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": width, "height": 2000}, device_scale_factor=1)
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(url)
                page.locator("input[type=file]").first.set_input_files(str(photo))
                page.wait_for_function("document.querySelector('#face-1')?.innerText.match(/\\d+%/g)?.length === 4")
                page.wait_for_function("document.querySelector('#predict-picture img')?.complete === true"
                                       " && document.querySelector('#predict-picture img').naturalWidth > 0")
                top = page.locator("#model-line").bounding_box()
                bottom = page.locator("#face-1").bounding_box()
                clip = {"x": 0, "y": max(top["y"] - MARGIN, 0), "width": width,
                        "height": bottom["y"] + bottom["height"] + MARGIN - max(top["y"] - MARGIN, 0)}
                png = page.screenshot(clip=clip)
            finally:
                browser.close()
    finally:
        demo.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    # (H, W, 3) RGB screenshot -> a palette PNG: flat UI colours survive, the two photos dither a little.
    Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=COLOURS).save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/screenshot.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"the PNG to write (default: {OUT.relative_to(ROOT)})")
    parser.add_argument("--width", type=int, default=WIDTH, help="the PNG's width in pixels")
    args = parser.parse_args(argv)
    if args.width < 800:
        parser.error("--width below 800 pixels stacks the Predict tab's columns; give 800 or more")
    sys.path.insert(0, str(ROOT))  # `app` and `fer` live at the repository root, above this script's folder
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import app
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    predictor = app.load_app_predictor()  # a missing model exits here, saying what to do
    try:
        path = capture(predictor, args.out, args.width)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except PlaywrightTimeout as error:
        print(f"error: the Predict tab did not show the astronaut's probabilities in time ({error}); is the machine "
              "busy? Run it again.", file=sys.stderr)
        return 1
    print(f"wrote {path} ({path.stat().st_size // 1024} KB) with {predictor.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
