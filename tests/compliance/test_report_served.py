"""`interlock report --decision-log`: the allows actually served to the order's subjects before
enforcement reached them, counted from the log."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from typer.testing import CliRunner

from interlock.cli import app
from interlock.demo import ORDER
from interlock.engine import Engine
from projections import compliance
from projections.compliance import View
from projections.decision_store import SQLiteDecisionLog
from tests.decision_log_support import Replica


def test_the_report_counts_the_exposure_window(demo: Engine, demo_db: Path, view: View,
                                               tmp_path: Path) -> None:
    order = view.facts.directives[ORDER]
    rows = compliance.impact(view.facts, ORDER, view.reach).rows
    covered = [(r.subject, r.model) for r in rows]
    assert len(covered) >= 3
    during = order.effective_at + timedelta(minutes=1)
    log = SQLiteDecisionLog(str(tmp_path / "decisions.db"))
    try:
        served = Replica(demo.index, log)
        exposed = served.serve(*covered[:3], covered[0], at=during, as_of=order.position - 1)
        assert {e.served.decision.effect for e in exposed} == {"allow"}
        enforced = served.serve(*covered[:3], at=during)  # denied, unless given back since
        served.serve(covered[0], at=order.effective_at - timedelta(minutes=5),
                     as_of=order.position - 1)                     # before it took effect
        uncovered = next((s, m) for s in sorted(view.facts.subjects) for m in ("opus-4.8",)
                         if (s, m) not in set(covered)
                         and demo.index.decide(s, m, at=during).effect == "allow")
        served.serve(uncovered, at=during)
    finally:
        log.close()
    page = tmp_path / "order.html"
    result = CliRunner().invoke(app, [
        "report", "--html", str(page), "--json", "--store", f"sqlite:///{demo_db}",
        "--decision-log", f"sqlite:///{tmp_path / 'decisions.db'}"])
    assert result.exit_code == 0, result.output
    served_json = json.loads(result.stdout)["served"]
    assert served_json["allows"] == 4
    assert served_json["subjects"] == len({subject for subject, _ in covered[:3]})
    assert served_json["after_enforcement"] == sum(
        e.served.decision.effect == "allow" for e in enforced)
    assert served_json["served"] == 7
    assert sum(served_json["by_model"].values()) == 4
    html = page.read_text()
    assert "Served after the order" in html
    assert "allows served before enforcement reached" in html


def test_without_a_log_the_report_has_no_served_section(demo_db: Path, tmp_path: Path) -> None:
    page = tmp_path / "order.html"
    result = CliRunner().invoke(app, ["report", "--html", str(page), "--json", "--store",
                                      f"sqlite:///{demo_db}"])
    assert result.exit_code == 0, result.output
    assert "served" not in json.loads(result.stdout)
    assert "Served after the order" not in page.read_text()
