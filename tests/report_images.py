"""Checks that a self-contained HTML report shows its charts: in a real headless browser when
Debian's `chromium` is installed (each image decoded and laid out with a non-zero size), else by
decoding every embedded image."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

DATA_PNG = "data:image/png;base64,"
MARK = "rendered-sizes"
# Writes, once the page has loaded, each image's decoded size and its laid-out size into the DOM.
PROBE = ("<script>window.addEventListener('load', () => { const p = document.createElement('pre'); p.id = '"
         + MARK + "'; p.textContent = [...document.images].map(i => [i.naturalWidth, i.naturalHeight, "
         "i.getBoundingClientRect().width, i.getBoundingClientRect().height].join(',')).join(' '); "
         "document.body.appendChild(p); });</script>")


class _Sources(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.alts: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src") or "")
            self.alts.append(a.get("alt") or "")
        if tag in ("script", "link", "iframe") and (a.get("src") or a.get("href")):
            self.external.append(f"{tag} {a.get('src') or a.get('href')}")


def _parse(html: str) -> _Sources:
    parser = _Sources()
    parser.feed(html)
    assert not parser.external, parser.external  # the page loads nothing from elsewhere
    return parser


def embedded_images(html: str) -> list[str]:
    """The src of every <img>."""
    return _parse(html).images


def decoded_sizes(html: str) -> list[tuple[int, int]]:
    sizes = []
    for src in embedded_images(html):
        assert src.startswith(DATA_PNG), src[:60]
        image = Image.open(io.BytesIO(base64.b64decode(src[len(DATA_PNG):], validate=True)))
        image.load()
        assert image.format == "PNG"
        sizes.append(image.size)
    return sizes


def chromium_sizes(html: str, chromium: str) -> list[tuple[float, float, float, float]]:
    """(natural width, natural height, laid-out width, height) of each image as chromium renders
    the page (a copy with PROBE added)."""
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
        proc = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp}/profile", "--window-size=1200,900", "--virtual-time-budget=10000",
             "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120)
    found = re.search(f'<pre id="{MARK}">([^<]*)</pre>', proc.stdout)
    assert found, f"chromium rendered no sizes (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return [tuple(float(v) for v in item.split(",")) for item in found.group(1).split()]


def rendered_charts(path: Path) -> list[str]:
    """Checks that every chart of the report at `path` renders with a non-zero size (in chromium
    when installed, else decoded); returns the charts' alt texts, in order."""
    html = Path(path).read_text(encoding="utf-8")
    decoded = decoded_sizes(html)
    assert decoded and all(w > 0 and h > 0 for w, h in decoded), decoded
    chromium = shutil.which("chromium")
    if chromium is not None:
        rendered = chromium_sizes(html, chromium)
        assert all(min(s) > 0 for s in rendered), rendered
        assert [s[:2] for s in rendered] == [tuple(map(float, d)) for d in decoded]
    return _parse(html).alts
