"""report.html opened in a real headless browser: its tables and embedded images render.

Uses Debian's `chromium` (`apt-get install chromium`); skipped with a message where it is not
installed.
"""
import base64
import re
import shutil
import subprocess

import numpy as np
import pytest

from liverzoo import evaluation, report
from tests.tools.test_evaluate import make_cases

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, real_ct_dir):
    root = tmp_path_factory.mktemp("report")
    pred_dir, ref_dir = make_cases(root, real_ct_dir)
    out = root / "out"
    summary = evaluation.evaluate(str(pred_dir), str(ref_dir), str(out), num_overlays=2, overlay_slices=1,
                                  report=True)
    return out, summary


def test_report_is_self_contained(evaluated):
    out, summary = evaluated
    page = (out / "report.html").read_text()
    assert "src=\"data:image/png;base64," in page and "overlays/" not in re.findall(r'src="([^"]*)"', page)[0]
    assert page.count("<img") == 1 + len(summary["overlays"])  # box plots + each overlay
    for needle in ("Lesion detection", "Detection by lesion size", "Per case", "Tumor burden", "case_10"):
        assert needle in page
    assert report.summary_lines(summary)[0] == "3 cases evaluated, 0 skipped"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium): "
                                            "the report is not opened in a browser")
def test_report_renders_in_headless_chromium(evaluated, tmp_path):
    out, summary = evaluated
    url = (out / "report.html").as_uri()
    dom = chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<table") == 5 and dom.stdout.count("<td") > 20
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', dom.stdout)
    assert len(images) == 1 + len(summary["overlays"])
    import matplotlib.image

    for alt, data in images:
        pixels = matplotlib.image.imread(__import__("io").BytesIO(base64.b64decode(data)), format="png")
        assert pixels.shape[0] > 200 and pixels[..., :3].std() > 0.01, alt  # decodes to a drawn image

    shot = tmp_path / "shot.png"
    result = chromium("--window-size=1200,2400", f"--screenshot={shot}", url)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = matplotlib.image.imread(str(shot))[..., :3]
    assert pixels.std() > 0.05  # not blank
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert np.count_nonzero(saturation > 0.4) > 200  # coloured plot and contour lines were painted
