"""The HTML report renders in a real headless browser (Debian's chromium): plots load, the claims table shows,
and digits are drawn by a text font even where an emoji font is installed.

Skipped where no chromium binary is installed (CI installs Debian's ``chromium`` package for this, with
``fonts-dejavu-core`` and ``fonts-noto-color-emoji``: the minimal font set the digit test is about).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_records import envelope, gpu_suite, write_run

from bench.report.build import build_report
from bench.report.document import TEXT_FONTS

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


def _fonts() -> str:
    fc = shutil.which("fc-list")
    if fc is None:
        return ""
    return subprocess.run([fc, ":", "family"], capture_output=True, text=True, timeout=60, check=False).stdout


# Appended to a copy of the report: draw ten digits inside a right-aligned number cell (the report's own
# CSS decides the font) and the same digits in the text fonts alone (no emoji font anywhere in the stack).
DIGITS_PROBE = """<script>
window.addEventListener("load", () => {
  const cell = document.querySelector("td.r");
  const size = parseFloat(getComputedStyle(cell).fontSize);
  const own = document.createElement("span");
  own.textContent = "0123456789";
  cell.appendChild(own);
  const plain = document.createElement("span");
  plain.textContent = "0123456789";
  plain.style.fontFamily = FONTS;
  plain.style.fontSize = size + "px";
  document.body.appendChild(plain);
  const emoji = document.createElement("span");
  emoji.textContent = "\u2705";
  cell.appendChild(emoji);
  const p = document.createElement("pre");
  p.id = "digits";
  p.textContent = `digits ${own.getBoundingClientRect().width} plain ${plain.getBoundingClientRect().width} `
    + `size ${size} emoji ${emoji.getBoundingClientRect().width}`;
  document.body.appendChild(p);
});
</script>"""


@pytest.mark.skipif("Noto Color Emoji" not in _fonts(), reason="no emoji font installed: nothing to guard against")
def test_digits_come_from_a_text_font_not_the_emoji_font(report: Path, tmp_path: Path):
    probe = tmp_path / "digits.html"
    script = DIGITS_PROBE.replace("FONTS", repr(TEXT_FONTS))
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    result = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    match = re.search(r"digits ([\d.]+) plain ([\d.]+) size ([\d.]+) emoji ([\d.]+)", result.stdout)
    assert match, f"no probe output; chromium said: {result.stderr[-2000:]}"
    digits, plain, size, emoji = (float(v) for v in match.groups())
    # Noto Color Emoji's digits are 1.25 em wide, a text font's about 0.55 to 0.65 em
    assert digits / 10 < 0.75 * size, f"ten digits {digits:.1f} px wide at {size} px: an emoji font drew them"
    assert abs(digits - plain) <= 1.0, (digits, plain)
    assert emoji > 0  # the check mark still has a font
