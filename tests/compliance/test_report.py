"""`interlock report --html`: a self-contained page, rendered in a real headless Chromium.

Chromium is treated like a service: the browser test runs where /usr/bin/chromium (or
$INTERLOCK_CHROMIUM) exists and skips with the reason elsewhere (`apt-get install chromium`),
except under INTERLOCK_REQUIRE_SERVICES=1 (CI, `make test`), where a missing browser fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interlock.cli import app
from interlock.demo import ORDER
from tests.services import services_required

CHROMIUM = os.environ.get("INTERLOCK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def page(demo_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "order.html"
    result = CliRunner().invoke(app, ["report", "--html", str(path), "--tz", "-05:00", "--json",
                                      "--store", f"sqlite:///{demo_db}"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["directive"] == ORDER and summary["changed"] > 0
    return path


def test_the_page_is_self_contained(page: Path, verified: list[str]) -> None:
    html = page.read_text()
    assert "<svg" in html and "<style>" in html
    assert not re.search(r"<(script|link|img|iframe)\b", html, re.I)
    assert not re.search(r"\b(src|href)\s*=", html, re.I)
    assert not re.search(r"url\(", html)
    assert "http" not in html.replace("http://www.w3.org/2000/svg", "")
    for text in ("Timeline", "received", "recorded", "enforced", "Subjects with access",
                 "Impact", "Unknowns still open", "unknown citizenship", "17:21:00 -05:00",
                 "hash-chain head"):
        assert text in html, text
    assert verified[0] not in html.split("Unknowns still open")[1], "restored at 17:40"


def png_pixels(path: Path) -> tuple[int, int, set[bytes]]:
    """Width, height and the distinct colours of an 8-bit RGB(A) PNG: a tiny decoder."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, chunks = 8, []
    width = height = colour_type = 0
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour_type in (2, 6)
        elif kind == b"IDAT":
            chunks.append(body)
    raw = zlib.decompress(b"".join(chunks))
    size = 3 if colour_type == 2 else 4
    stride = width * size
    previous = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - size] if i >= size else 0
            up, corner = previous[i], previous[i - size] if i >= size else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                guess = left + up - corner
                pa, pb, pc = abs(guess - left), abs(guess - up), abs(guess - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc
                                      else corner)) & 255
        if y % 4 == 0:
            colours.update(bytes(line[x:x + 3]) for x in range(0, stride, size * 2))
        previous = line
    return width, height, colours


@pytest.mark.skipif(not Path(CHROMIUM).exists() and not services_required(),
                    reason=f"no Chromium at {CHROMIUM}: apt-get install chromium")
def test_chromium_renders_it(page: Path, tmp_path: Path) -> None:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600"]
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=90, check=True)
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True,
                         timeout=90, check=True, text=True).stdout
    width, height, colours = png_pixels(shot)
    assert (width, height) == (1200, 1600)
    assert len(colours) > 50, "the screenshot looks blank"
    for text in ("Order bis-2026-0417", "Timeline", "received", "effective", "recorded",
                 "enforced", "Subjects with access, per model", "as decided then",
                 "as known now", "fable-5", "mythos-5", "unknown citizenship"):
        assert text in dom, text
    assert "<svg" in dom and "<path" in dom


def test_the_enforcer_log_gives_the_enforced_time(demo_db: Path, demo: object,
                                                  tmp_path: Path) -> None:
    from interlock.engine import Engine

    assert isinstance(demo, Engine)
    order = demo.index.facts.directives[ORDER]
    log = tmp_path / "revocations.jsonl"
    log.write_text("".join(json.dumps({"type": "access_revoked", "position": position,
                                       "emitted_at": emitted}) + "\n"
                           for position, emitted in (
                               (order.position, "2026-11-26T22:21:00.150000+00:00"),
                               (order.position, "2026-11-26T22:21:00.090000+00:00"),
                               (order.position + 1, "2026-11-26T22:40:00+00:00"))))
    path = tmp_path / "order.html"
    result = CliRunner().invoke(app, ["report", "--html", str(path), "--revocations", str(log),
                                      "--store", f"sqlite:///{demo_db}"])
    assert result.exit_code == 0, result.output
    html = path.read_text()
    assert "2026-11-26 22:21:00.090 +00:00</time><strong>enforced</strong>" in html
    assert "first of 2 access_revoked records" in html
