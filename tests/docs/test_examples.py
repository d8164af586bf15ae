"""The 5:21 p.m. story runs as it is, and its README tells the truth: it shows every line of
the story in order, and each decision, count and position it quotes is what Interlock answers.
The demo's exported commands apply as they are too."""

from __future__ import annotations

import io
import json
import re
import shlex
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from typer.testing import CliRunner

from interlock.cli import app
from interlock.demo import run_demo
from interlock.http.app import create_app
from interlock.http.settings import ServeSettings

ROOT = Path(__file__).resolve().parents[2]
STORY = ROOT / "examples" / "5-21"
README = (STORY / "README.md").read_text()


def cli(*args: str, stdin: str | None = None, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args), input=stdin)
    assert result.exit_code == code, result.output
    return result.stdout


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The story applied, as the README does, to a new store."""
    store = f"sqlite:///{tmp_path_factory.mktemp('story') / 'story.db'}"
    applied = cli("--store", store, "apply", str(STORY / "story.jsonl"))
    quoted = re.search(r"It prints `(\{[^`]*\})`", README)
    assert quoted and json.loads(applied) == json.loads(quoted.group(1))
    return store


def test_the_readme_shows_every_line_of_the_story_in_order() -> None:
    shown = [line for block in re.findall(r"```json\n(.*?)```", README, re.S)
             for line in block.splitlines()]
    assert shown == (STORY / "story.jsonl").read_text().splitlines()


def expectations() -> list[dict[str, str]]:
    section = README.split("## What Interlock answers")[1].split("\n## ")[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| 20")]
    assert len(rows) >= 25
    return [dict(zip(("at", "subject", "model", "options", "decision", "reasons"), row,
                     strict=True)) for row in rows]


def reasons(decision: dict) -> str:
    return ", ".join(r["code"] + (f"={r['ref']}" if r["ref"] else "")
                     for r in decision["reasons"])


def effect(decision: dict) -> str:
    if decision["effect"] != "route":
        return decision["effect"]
    return f"route to {decision['route_to']}" + (", disclosed" if decision["disclosed"] else "")


@pytest.mark.parametrize("row", expectations(),
                         ids=lambda r: f"{r['subject']}-{r['model']}-{r['at'][5:16]}")
def test_decisions_at_the_moments_the_readme_names(story: str, row: dict[str, str]) -> None:
    decision = json.loads(cli("--store", story, "decide", row["subject"], row["model"],
                              "--at", row["at"], *shlex.split(row["options"]), "--json"))
    assert (effect(decision), reasons(decision)) == (row["decision"], row["reasons"])


def test_the_figures_the_readme_quotes(story: str, tmp_path: Path) -> None:
    impact = json.loads(cli("--store", story, "impact", "bis-2026-0417", "--json"))
    assert "8 (subject, model) pairs of 5 subjects" in README
    assert (impact["changed"]["pairs"], impact["changed"]["subjects"]) == (8, 5)
    unknown = [g for g in impact["groups"] if g["group"] == "unknown_attribute"]
    assert sum(g["pairs"] for g in unknown) == 4, "half of them for an unknown citizenship"
    page = tmp_path / "order.html"
    summary = json.loads(cli("--store", story, "report", "--html", str(page), "--directive",
                             "bis-2026-0417", "--tz", "-05:00", "--now",
                             "2026-11-26T18:30:00-05:00", "--json"))
    assert "3 of\nthe 8 pairs the order cut off have access again" in README
    assert re.search(r"<b>3</b><span>of those pairs have access again now", page.read_text())
    assert summary["changed"] == 8 and summary["unknowns"] == 1
    history = json.loads(cli("--store", story, "history", "u-dana", "--json"))
    passport = [a for a in history["attestations"] if a["kind"] == "nationality"]
    assert [a["position"] for a in passport] == [43], "--as-of 42 is just before it"


def test_the_signed_order_as_the_readme_does_it(
    story: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --officer-keys reaches every engine of the process through the environment: undo it after
    monkeypatch.setenv("INTERLOCK_OFFICER_KEYS", "{}")
    key, keys = tmp_path / "officer.pem", tmp_path / "officers.json"
    keys.write_text(cli("sign", "--generate-key", "--key", str(key), "--key-id", "officer-1"))
    unsigned = STORY / "expiry.jsonl"
    signed = cli("sign", "--key", str(key), "--key-id", "officer-1", str(unsigned))
    refused = CliRunner().invoke(app, ["--store", story, "--officer-keys", str(keys), "apply",
                                       str(unsigned)])
    assert refused.exit_code == 2 and refused.stderr.startswith("line 1: signature: ")
    assert "exit 2: line 1: signature: ..." in README
    applied = cli("--store", story, "--officer-keys", str(keys), "apply", "-", stdin=signed)
    assert f"#   {applied.strip()}" in README


def test_the_http_decision_the_readme_shows(story: str) -> None:
    asked = {"subject": "u-chen", "model": "fable-5", "at": "2026-11-26T17:25:00-05:00"}
    assert json.dumps(asked) in README
    with TestClient(create_app(ServeSettings(store=story))) as client:
        answer = client.post("/v1/decide", json=asked).json()
    decided = json.loads(cli("--store", story, "decide", "u-chen", "fable-5", "--at",
                             asked["at"], "--json"))
    assert answer == decided
    assert reasons(answer) == "directive=bis-2026-0417" and answer["effect"] == "deny"


def test_the_demo_exports_commands_that_apply_as_they_are(tmp_path: Path) -> None:
    """Applied with `interlock apply`, the exported commands decide as the demo's own store
    does at every valid time (only the recorded times differ)."""
    exported = tmp_path / "demo.jsonl"
    result = json.loads(cli("demo", "--subjects", "200", "--export", str(exported)))
    lines = exported.read_text().splitlines()
    assert result == {"exported": len(lines), "file": str(exported)}
    assert cli("demo", "--subjects", "200", "--export", "-").splitlines() == lines
    applied = f"sqlite:///{tmp_path / 'applied.db'}"
    assert json.loads(cli("--store", applied, "apply", str(exported)))["applied"] == len(lines)
    demo = f"sqlite:///{tmp_path / 'demo.db'}"
    run_demo(Console(file=io.StringIO()), demo, subjects=200)
    requests = "".join(json.dumps({"subject": f"u-{n:05d}", "model": model, "at": at}) + "\n"
                       for n in range(200) for model in ("fable-5", "mythos-5", "opus-4.8")
                       for at in ("2026-11-26T17:00:00-05:00", "2026-11-26T17:30:00-05:00"))

    def verdicts(store: str) -> list[tuple]:
        return [(d["effect"], reasons(d)) for d in map(json.loads, cli(
            "--store", store, "decide", "--batch", "-", stdin=requests).splitlines())]

    assert verdicts(applied) == verdicts(demo)
    assert ("deny", "directive=bis-2026-0417") in verdicts(applied)
