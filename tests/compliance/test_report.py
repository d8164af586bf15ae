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
from datetime import UTC, datetime, timedelta
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


def chromium_flags(tmp_path: Path) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600"]


needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists() and not services_required(),
                                    reason=f"no Chromium at {CHROMIUM}: apt-get install chromium")


@needs_chromium
def test_chromium_renders_it(page: Path, tmp_path: Path) -> None:
    flags = chromium_flags(tmp_path)
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


# --- the figures tell the truth "now"; the chart's labels never overprint -----------------

MEASURE = """<script>
const boxes = [...document.querySelectorAll('svg text')].map(t => {
  const b = t.getBoundingClientRect();
  return {cls: t.getAttribute('class'), text: t.textContent, left: b.left, right: b.right,
          top: b.top, bottom: b.bottom};
});
const pre = document.createElement('pre');
pre.id = 'measured';
pre.textContent = JSON.stringify(boxes);
document.body.appendChild(pre);
</script>"""
"""Added to a copy of the page only: the report itself carries no script."""


def rendered(page: Path, tmp_path: Path) -> tuple[str, list[dict]]:
    """The DOM Chromium built from the page, and the box of every chart text it laid out."""
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    dom = subprocess.run([CHROMIUM, *chromium_flags(tmp_path), "--dump-dom", probe.as_uri()],
                         capture_output=True, timeout=90, check=True, text=True).stdout
    found = re.search(r"<pre id=\"measured\">(.*?)</pre>", dom, re.S)
    assert found, "the measuring script did not run"
    return dom, json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def overlapping(boxes: list[dict]) -> list[tuple[str, str]]:
    return [(a["text"], b["text"]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if a["left"] < b["right"] and b["left"] < a["right"]
            and a["top"] < b["bottom"] and b["top"] < a["bottom"]]


def cards(dom: str) -> dict[str, int]:
    return {" ".join(label.split()): int(number.replace(",", ""))
            for number, label in re.findall(
                r'<div class="card"><b>([\d,]+)</b><span>([^<]*)</span>', dom)}


def cli(store: str, *args: str, stdin: str | None = None) -> str:
    result = CliRunner().invoke(app, ["--store", store, *args], input=stdin)
    assert result.exit_code == 0, result.output
    return result.stdout


def employees(*subjects: tuple[str, list[str], list[str]]) -> list[dict]:
    commands = []
    for subject, citizenships, residencies in subjects:
        commands.append({"type": "attest_employer", "subject": subject, "org": "acme",
                         "valid_from": "2025-06-01T00:00:00+00:00", "source": "hr-feed"})
        if citizenships or residencies:
            commands.append({"type": "attest_nationality", "subject": subject,
                             "citizenships": citizenships, "residencies": residencies,
                             "valid_from": "1990-01-01T00:00:00+00:00",
                             "source": "passport-kyc"})
    return commands


SETUP = [
    {"type": "register_model", "model": "fable-5", "family": "fable"},
    {"type": "register_model", "model": "mythos-5", "family": "mythos"},
    {"type": "register_model", "model": "opus-4.8", "family": "opus"},
    {"type": "grant_entitlement", "entitlement": "org-acme", "grantee": {"org": "acme"},
     "models": ["*"], "valid_from": "2026-01-01T00:00:00+00:00"},
    *employees(("u-us", ["US"], []), ("u-de", ["DE"], []), ("u-dual", ["US", "FR"], []),
               ("u-gc", ["IN"], ["US"]), ("u-unk1", [], []), ("u-unk2", [], []),
               ("u-unk3", [], []), ("u-late", [], [])),
]
SUBJECTS = ["u-us", "u-de", "u-dual", "u-gc", "u-unk1", "u-unk2", "u-unk3", "u-late"]


def order(received: datetime, effective: datetime) -> dict:
    return {"type": "issue_directive", "directive": "bis-2026-0417",
            "authority": "US Dept. of Commerce (BIS)", "received_at": received.isoformat(),
            "effective_at": effective.isoformat(), "models": ["fable-5", "mythos-5"],
            "subjects": {"citizenship": {"none_of": ["US"]}}}


def jsonl(*commands: dict) -> str:
    return "".join(json.dumps(c) + "\n" for c in commands)


@needs_chromium
def test_an_order_effective_after_it_was_recorded_is_reported_as_decide_answers(
    tmp_path: Path,
) -> None:
    """The order arrives now and takes effect 3 minutes later; a passport and an exemption
    follow. Reported 5 minutes on (--now), every figure "now" is what `decide` answers then."""
    received = datetime.now(UTC).replace(microsecond=0)
    effective, later = received + timedelta(minutes=3), received + timedelta(minutes=5)
    store = f"sqlite:///{tmp_path}/store.db"
    cli(store, "apply", "-", stdin=jsonl(*SETUP, order(received, effective)))
    cli(store, "apply", "-", stdin=jsonl(
        {"type": "attest_nationality", "subject": "u-late", "citizenships": ["US"],
         "valid_from": "1990-01-01T00:00:00+00:00", "source": "passport-kyc"},
        {"type": "amend_directive", "directive": "bis-2026-0417",
         "exempt": {"subjects": ["u-unk3"], "orgs": []},
         "effective_at": (received + timedelta(minutes=4)).isoformat()}))
    page = tmp_path / "order.html"
    cli(store, "report", "--html", str(page), "--tz", "-05:00", "--now", later.isoformat())

    changed = json.loads(cli(store, "impact", "bis-2026-0417", "--json"))["changes"]
    requests = [{"subject": s, "model": m, "at": later.isoformat()}
                for s in SUBJECTS for m in ("fable-5", "mythos-5", "opus-4.8")]
    decided = {(d["subject"], d["model"]): d for d in map(json.loads, cli(
        store, "decide", "--batch", "-", stdin=jsonl(*requests)).splitlines())}
    again = sum(decided[c["subject"], c["model"]]["effect"] == "allow" for c in changed)
    still_unknown = {s for (s, _), d in decided.items() if d["effect"] == "deny"
                     and {"code": "directive", "ref": "bis-2026-0417"} in d["reasons"]
                     and any(r["code"] == "unknown_attribute" for r in d["reasons"])}
    assert (len(changed), again, still_unknown) == (12, 4, {"u-unk1", "u-unk2"})

    dom, boxes = rendered(page, tmp_path)
    figures = cards(dom)
    assert figures["(subject, model) decisions the order changed"] == len(changed)
    assert figures["of those pairs have access again now"] == again
    assert figures["subjects still denied for an unknown attribute"] == len(still_unknown)
    unknowns = dom.split("Unknowns still open")[1]
    assert all(subject in unknowns for subject in still_unknown)
    assert "u-late" not in unknowns and "u-unk3" not in unknowns
    marks = [b for b in boxes if b["cls"] == "mark"]
    assert {b["text"].split()[0] for b in marks} == {"received", "recorded", "effective"}
    assert overlapping(marks) == [], "received and recorded are a second apart"
    times = re.findall(r"<time>([^<]*)</time>", dom)
    assert times and all(t.endswith("-05:00") for t in times), times
    assert "; effective <time>" in dom, "the amendment's effective time, in --tz"


@needs_chromium
def test_an_order_recorded_days_after_it_took_effect_dates_its_axis(tmp_path: Path) -> None:
    recorded = datetime.now(UTC)
    effective = recorded - timedelta(days=5)
    store = f"sqlite:///{tmp_path}/store.db"
    cli(store, "apply", "-", stdin=jsonl(*SETUP, order(effective, effective)))
    page = tmp_path / "order.html"
    cli(store, "report", "--html", str(page), "--tz", "-05:00")
    dom, boxes = rendered(page, tmp_path)
    ticks = [b["text"] for b in boxes if b["cls"] == "axis" and re.search(r"\d:\d\d$", b["text"])]
    assert len(ticks) == 7 and all(re.fullmatch(r"\d\d-\d\d \d\d:\d\d", t) for t in ticks)
    assert len(set(ticks)) == 7
    marks = [b for b in boxes if b["cls"] == "mark"]
    assert {b["text"].split()[0] for b in marks} == {"received", "recorded"}
    assert all(re.search(r"\d{4}-\d\d-\d\d", b["text"]) for b in marks), "dated marks"
    assert overlapping(marks) == [] and overlapping(
        [b for b in boxes if b["cls"] == "axis"]) == []
    assert cards(dom)["of those pairs have access again now"] == 0
