"""The HTML report renders in a real headless browser (Debian's chromium): plots load, the claims table shows.

Skipped where no chromium binary is installed (CI installs Debian's ``chromium`` package for this).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_records import envelope, gpu_suite, write_run

from bench.report.build import build_report

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)

# Appended to a copy of the report (the report itself has no script): after load, count the images the
# browser decoded and the claims table it laid out, and write the counts into the page.
PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const decoded = imgs.filter(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0);
  const claims = [...document.querySelectorAll("table")].find(
    t => t.querySelector("th") && t.querySelector("th").textContent === "Claim");
  const rows = claims ? claims.querySelectorAll("tbody tr").length : 0;
  const visible = claims ? claims.getBoundingClientRect().height > 0 : false;
  const p = document.createElement("pre");
  p.id = "probe";
  p.textContent = `images ${decoded.length}/${imgs.length} claims-rows ${rows} claims-visible ${visible}`;
  document.body.appendChild(p);
});
</script>"""


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    folder = write_run(tmp_path_factory.mktemp("browser") / "run", gpu_suite(), envelope())
    return build_report(folder).html


def test_plots_and_claims_table_render(report: Path, tmp_path: Path):
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    result = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    match = re.search(r"images (\d+)/(\d+) claims-rows (\d+) claims-visible (\w+)", result.stdout)
    assert match, f"no probe output; chromium said: {result.stderr[-2000:]}"
    decoded, total, rows, visible = match.groups()
    assert int(total) == 7 and decoded == total
    assert int(rows) == 3 and visible == "true"


def test_screenshot_is_not_blank(report: Path, tmp_path: Path):
    shot = tmp_path / "report.png"
    result = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", report.as_uri())
    assert shot.is_file(), f"no screenshot; chromium said: {result.stderr[-2000:]}"
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 2400)
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 500  # text, tables and plots, not an empty page
