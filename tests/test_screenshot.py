"""tools/screenshot.py: the README's picture of the Predict tab, made in Chromium from the real app."""

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("screenshot", ROOT / "tools" / "screenshot.py")
screenshot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(screenshot)


@pytest.mark.browser
def test_capture_writes_a_small_png_of_the_classified_photo(predictor, tmp_path):
    path = screenshot.capture(predictor, tmp_path / "figures" / "predict.png", width=1000)
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.mode == "P"  # palette: the README's picture stays small
        assert picture.width == 1000
        assert 600 < picture.height < 1400  # the model line down to the face panel, not the whole page
    assert path.stat().st_size < 300 * 1024


def test_too_narrow_a_width_is_refused_before_anything_starts(capsys):
    with pytest.raises(SystemExit) as exit_info:
        screenshot.main(["--width", "500", "--out", "unused.png"])
    assert exit_info.value.code == 2
    assert "800 or more" in capsys.readouterr().err


def test_a_missing_chromium_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("CHROMIUM_PATH", str(tmp_path / "no-chromium"))
    with pytest.raises(FileNotFoundError, match="apt-get install -y chromium"):
        screenshot.capture(predictor=None, out=tmp_path / "predict.png")
