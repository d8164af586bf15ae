"""The order report: one self-contained HTML page an officer can send on.

Inline CSS and an inline SVG chart, no scripts and no external assets, so the file renders the
same in a mail client, a browser offline or a print to PDF. The data comes from
`projections.compliance.order_report`; this module only lays it out.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from html import escape
from typing import Any

from projections.compliance import ImpactRow, OrderReport, SeriesPoint
from projections.decision_log import Exposure

PALETTE = ("#1f6feb", "#d1495b", "#2a9d8f", "#e9a03b", "#6a4c93", "#8c8c8c")
WIDTH, HEIGHT = 1040, 380
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 24, 56
ROWS_SHOWN = 100


def parse_offset(text: str | None) -> tzinfo:
    """`UTC`, `Z` or `±HH:MM` (the report's display time zone)."""
    if not text or text.upper() in ("UTC", "Z"):
        return UTC
    sign = -1 if text.startswith("-") else 1
    hours, _, minutes = text.lstrip("+-").partition(":")
    return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes or 0)))


def _when(value: str | datetime | None, tz: tzinfo, date: bool = True) -> str:
    if value is None:
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    local = moment.astimezone(tz)
    text = local.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")
    if local.microsecond:
        text += f".{local.microsecond // 1000:03d}"
    return text + ("" if not date else f" {local.strftime('%z')[:3]}:{local.strftime('%z')[3:]}")


def _n(value: int) -> str:
    return f"{value:,}"


def _verdict(verdict: Any) -> str:
    reasons = ", ".join(f"{r.code}={r.ref}" if r.ref else r.code for r in verdict.reasons)
    return f"<b class='{escape(verdict.effect)}'>{escape(verdict.effect)}</b> " \
           f"<span class='muted'>{escape(reasons)}</span>"


def _chart(points: list[SeriesPoint], models: list[str], marks: list[tuple[str, datetime]],
           tz: tzinfo) -> str:
    """Step lines per model: solid as decided then, dashed as known now."""
    if not points:
        return "<p class='muted'>No data for the chart.</p>"
    start, end = points[0].at, points[-1].at
    span = (end - start).total_seconds() or 1.0
    top = _nice(max(max(max(p.decided.values(), default=0), max(p.known_now.values(),
                                                                 default=0))
                    for p in points) * 1.05)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(moment: datetime) -> float:
        return LEFT + plot_w * (moment - start).total_seconds() / span

    def y(count: int) -> float:
        return TOP + plot_h * (1 - count / top)

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {WIDTH} {HEIGHT}' "
             f"width='100%' role='img' aria-label='Subjects with access per model over time'>",
             f"<rect x='{LEFT}' y='{TOP}' width='{plot_w}' height='{plot_h}' fill='#fbfcfe' "
             "stroke='#d0d7de'/>"]
    for i in range(6):
        value = round(top * i / 5)
        parts.append(f"<line x1='{LEFT}' x2='{WIDTH - RIGHT}' y1='{y(value):.1f}' "
                     f"y2='{y(value):.1f}' stroke='#eaeef2'/>"
                     f"<text x='{LEFT - 8}' y='{y(value) + 4:.1f}' text-anchor='end' "
                     f"class='axis'>{_n(value)}</text>")
    dated = start.astimezone(tz).date() != end.astimezone(tz).date()
    tick = "%m-%d %H:%M" if dated else "%H:%M"
    for i in range(7):
        moment = start + (end - start) * i / 6
        anchor = "start" if i == 0 else "end" if i == 6 else "middle"
        parts.append(f"<text x='{x(moment):.1f}' y='{HEIGHT - BOTTOM + 18}' "
                     f"text-anchor='{anchor}' class='axis'>"
                     f"{moment.astimezone(tz).strftime(tick)}</text>")
    shown = [(label, moment) for label, moment in marks if start <= moment <= end]
    for (label, moment), (left, row, anchor) in zip(
        shown, _mark_rows([x(moment) for _, moment in shown],
                          [f"{label} {_when(moment, tz, date=dated)}" for label, moment in shown]),
        strict=True,
    ):
        at = x(moment)
        parts.append(f"<line x1='{at:.1f}' x2='{at:.1f}' y1='{TOP}' y2='{HEIGHT - BOTTOM}' "
                     "stroke='#57606a' stroke-dasharray='2 3'/>"
                     f"<text x='{left:.1f}' y='{TOP + 14 + MARK_ROW * row}' "
                     f"text-anchor='{anchor}' class='mark'>"
                     f"{escape(label)} {_when(moment, tz, date=dated)}</text>")
    for number, model in enumerate(models):
        colour = PALETTE[number % len(PALETTE)]
        width = 2.2 + 1.6 * (len(models) - 1 - number) / max(len(models) - 1, 1)
        for view, dash in (("decided", ""), ("known_now", " stroke-dasharray='7 5'")):
            counts = [getattr(p, view)[model] for p in points]
            path = f"M{x(points[0].at):.1f},{y(counts[0]):.1f}"
            for point, count in zip(points[1:], counts[1:], strict=True):
                path += f" H{x(point.at):.1f} V{y(count):.1f}"
            parts.append(f"<path d='{path}' fill='none' stroke='{colour}' "
                         f"stroke-width='{width:.1f}'{dash} opacity='{1 if not dash else 0.8}'/>")
    legend_y = HEIGHT - 14
    cursor = LEFT
    for number, model in enumerate(models):
        colour = PALETTE[number % len(PALETTE)]
        parts.append(f"<rect x='{cursor}' y='{legend_y - 9}' width='14' height='4' "
                     f"fill='{colour}'/><text x='{cursor + 20}' y='{legend_y - 4}' "
                     f"class='legend'>{escape(model)}</text>")
        cursor += 30 + 8 * len(model) + 20
    parts.append(f"<line x1='{cursor}' x2='{cursor + 24}' y1='{legend_y - 7}' "
                 f"y2='{legend_y - 7}' stroke='#333' stroke-width='2'/><text x='{cursor + 30}' "
                 f"y='{legend_y - 4}' class='legend'>as decided then</text>")
    cursor += 150
    parts.append(f"<line x1='{cursor}' x2='{cursor + 24}' y1='{legend_y - 7}' "
                 f"y2='{legend_y - 7}' stroke='#333' stroke-width='2' stroke-dasharray='7 5'/>"
                 f"<text x='{cursor + 30}' y='{legend_y - 4}' class='legend'>as known now"
                 "</text>")
    parts.append("</svg>")
    return "".join(parts)


MARK_ROW = 15
MARK_CHAR = 7.6
"""Line height and a generous width per character of the chart's mark labels (bold 12 px), so
that labels placed apart by this measure never touch."""


def _mark_rows(xs: list[float], labels: list[str]) -> list[tuple[float, int, str]]:
    """Where each mark's label goes: beside its line (to the right, or to the left where it
    would leave the plot), in the first row where it overlaps no label already placed."""
    rows: list[list[tuple[float, float]]] = []
    placed = []
    for at, label in zip(xs, labels, strict=True):
        width = MARK_CHAR * len(label)
        right = at + 4 + width <= WIDTH - RIGHT
        span = (at + 4, at + 4 + width) if right else (at - 4 - width, at - 4)
        row = next((n for n, taken in enumerate(rows)
                    if all(span[1] + 6 < a or b + 6 < span[0] for a, b in taken)), len(rows))
        if row == len(rows):
            rows.append([])
        rows[row].append(span)
        placed.append((span[0] if right else span[1], row, "start" if right else "end"))
    return placed


def _nice(value: float) -> int:
    """A round number at or above `value` for the top of the chart."""
    if value <= 1:
        return 1
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * magnitude >= value:
            return int(step * magnitude)
    return int(10 * magnitude)


def _rows_table(rows: list[ImpactRow], report: OrderReport, shown: int) -> str:
    body = []
    for row in rows[:shown]:
        why = "unknown " + ", ".join(row.unknown) if row.group == "unknown_attribute" \
            else "meets the order's predicate"
        body.append(f"<tr><td>{escape(row.subject)}</td><td>{escape(row.model)}</td>"
                    f"<td>{escape(why)}</td><td>{_verdict(row.before)}</td>"
                    f"<td>{_verdict(row.after)}</td></tr>")
    more = len(rows) - shown
    note = f"<p class='muted'>… and {_n(more)} more rows: <code>interlock impact " \
           f"{escape(report.impact.directive.directive)} --json</code> lists them all.</p>" \
        if more > 0 else ""
    return ("<table><thead><tr><th>subject</th><th>model</th><th>why</th><th>before</th>"
            "<th>after</th></tr></thead><tbody>" + "".join(body) + "</tbody></table>" + note)


STYLE = """
body{font:15px/1.45 -apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;
 color:#1f2328;background:#f6f8fa;margin:0}
main{max-width:1100px;margin:0 auto;padding:28px 32px 48px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 10px;border-bottom:1px solid
 #d0d7de;padding-bottom:4px}
.muted{color:#57606a}.sub{color:#57606a;margin:0 0 18px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:18px 0}
.card{flex:1 1 150px;border:1px solid #d0d7de;border-radius:8px;padding:10px 14px;
 background:#fbfcfe}.card b{display:block;font-size:24px}.card span{color:#57606a;font-size:13px}
table{border-collapse:collapse;width:100%;font-size:13.5px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}
th{background:#f6f8fa;font-weight:600}td.num,th.num{text-align:right}
ol.timeline{list-style:none;padding:0;margin:0;border-left:3px solid #1f6feb}
ol.timeline li{margin:0 0 10px;padding-left:14px;position:relative}
ol.timeline li:before{content:'';position:absolute;left:-8px;top:6px;width:11px;height:11px;
 border-radius:50%;background:#fff;border:3px solid #1f6feb}
ol.timeline time{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}
ol.timeline strong{margin:0 6px;text-transform:uppercase;font-size:12.5px;letter-spacing:.04em}
.deny{color:#cf222e}.allow{color:#1a7f37}.route{color:#9a6700}
svg text{font:12px -apple-system,'Segoe UI',Roboto,Arial,sans-serif;fill:#57606a}
svg text.mark{fill:#24292f;font-weight:600}svg text.legend{fill:#24292f}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;background:#f6f8fa;
 padding:1px 4px;border-radius:4px}
footer{margin-top:36px;font-size:12.5px;color:#57606a}
"""


def _served_section(served: Exposure | None, tz: tzinfo) -> str:
    """What the decision log says was served to the order's subjects (`--decision-log`)."""
    if served is None:
        return ""
    by_model = "".join(f"<tr><td>{escape(model)}</td><td class='num'>{_n(count)}</td></tr>"
                       for model, count in served.by_model.items())
    window = (f"the first at {_when(served.first, tz)}, the last at {_when(served.last, tz)}"
              if served.first is not None else "none")
    return f"""
<h2>Served after the order</h2>
<p class="muted">From the decision log: decisions served for the (subject, model) pairs the order
cut off, about valid times it was in force ({_n(served.served)} served). An allow answered as of
a position before the order's was served before enforcement reached that replica: the real
exposure window ({window}).</p>
<div class="cards">
<div class="card"><b>{_n(served.allows)}</b><span>allows served before enforcement reached
them</span></div>
<div class="card"><b>{_n(served.subjects)}</b><span>subjects served those allows</span></div>
<div class="card"><b>{_n(served.after_enforcement)}</b><span>allows served as of the order or
later (access given back by facts recorded since)</span></div>
</div>
<table><thead><tr><th>model</th><th class="num">allows before enforcement</th></tr></thead>
<tbody>{by_model or "<tr><td colspan='2' class='muted'>none</td></tr>"}</tbody></table>
"""


def render(report: OrderReport, tz: tzinfo = UTC, rows: int = ROWS_SHOWN,
           served: Exposure | None = None) -> str:
    """The report as one HTML document, listing up to `rows` changed decisions and unknowns;
    with `served` (from the decision log), what was served to the order's subjects."""
    impact = report.impact
    d = impact.directive
    groups = impact.groups()
    unknown_pairs = sum(g["pairs"] for g in groups if g["group"] == "unknown_attribute")
    restored = sum(report.restored.values())
    marks = [("received", d.received_at), ("recorded", d.recorded_at)]
    if d.effective_at not in (d.received_at, d.recorded_at):
        marks.append(("effective", d.effective_at))
    timeline = "".join(
        f"<li><time>{_when(entry['at'], tz)}</time><strong>{escape(entry['what'])}</strong>"
        f"<span>{escape(entry['detail'])}"
        + "".join(f"; {escape(label)} <time>{_when(value, tz)}</time>"
                  for label, value in entry.get("times", {}).items())
        + "</span></li>" for entry in report.timeline
    )
    group_rows = []
    for group in groups:
        label = ("unknown " + ", ".join(group["unknown_attributes"])
                 if group["group"] == "unknown_attribute" else "meets the predicate")
        cells = "".join(f"<td class='num'>{_n(group['by_model'].get(m, 0))}</td>"
                        for m in impact.models)
        group_rows.append(f"<tr><td>{escape(label)}</td>{cells}<td class='num'>"
                          f"{_n(group['pairs'])}</td><td class='num'>{_n(group['subjects'])}"
                          "</td></tr>")
    totals = impact.to_json()["changed"]
    model_heads = "".join(f"<th class='num'>{escape(m)}</th>" for m in impact.models)
    total_cells = "".join(f"<td class='num'><b>{_n(totals['by_model'].get(m, 0))}</b></td>"
                          for m in impact.models)
    restored_cells = "".join(f"<td class='num'>{_n(report.restored.get(m, 0))}</td>"
                             for m in impact.models)
    unknown_rows = "".join(
        f"<tr><td>{escape(u['subject'])}</td><td>{escape(', '.join(u['employer']) or '—')}</td>"
        f"<td>{escape(', '.join(u['models']))}</td>"
        f"<td>{escape(', '.join(u['unknown_attributes']))}</td></tr>"
        for u in report.unknowns[:rows]
    )
    more_unknowns = len(report.unknowns) - rows
    chain = ("no hash chain is kept for this store" if report.chain_head is None else
             f"hash-chain head at position {_n(report.chain_head[0])}: "
             f"<code>{report.chain_head[1]}</code> (check with <code>interlock verify "
             f"--expect-head {report.chain_head[1]}</code>)")
    predicate = escape(json.dumps(impact.terms.predicate.to_data()))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Order {escape(d.directive)}: impact report</title>
<style>{STYLE}</style></head>
<body><main>
<h1>Order {escape(d.directive)}</h1>
<p class="sub">{escape(d.authority)}{', ' + escape(d.reference) if d.reference else ''} ·
{escape(impact.terms.effect)} on <b>{escape(', '.join(impact.terms.selectors))}</b> for subjects
matching <code>{predicate}</code> (on unknown: {escape(impact.terms.on_unknown)}) · report as of
position {_n(report.position)}, {_when(report.now, tz)}</p>

<div class="cards">
<div class="card"><b>{_n(len(impact.rows))}</b><span>(subject, model) decisions the order
changed</span></div>
<div class="card"><b>{_n(totals['subjects'])}</b><span>subjects cut off, of
{_n(report.subjects)}</span></div>
<div class="card"><b>{_n(unknown_pairs)}</b><span>pairs cut off for an unknown
attribute</span></div>
<div class="card"><b>{_n(restored)}</b><span>of those pairs have access again now</span></div>
<div class="card"><b>{_n(len(report.unknowns))}</b><span>subjects still denied for an unknown
attribute</span></div>
</div>

<h2>Timeline</h2>
<ol class="timeline">{timeline}</ol>

<h2>Subjects with access, per model</h2>
<p class="muted">Decisions at {len(report.series)} valid times around the order. Solid: as decided
then, with the facts known at that moment. Dashed: as known now, with every fact recorded since
(late attestations included).</p>
{_chart(report.series, report.models, marks, tz)}

<h2>Impact</h2>
<p class="muted">Decisions at the order's effective time ({_when(impact.at, tz)}), as known just
before its position ({_n(impact.before)}) and at it ({_n(impact.after)}); {_n(impact.compared)}
candidate subjects compared.</p>
<table><thead><tr><th>reason</th>{model_heads}<th class="num">pairs</th>
<th class="num">subjects</th></tr></thead><tbody>{''.join(group_rows)}
<tr><td><b>total</b></td>{total_cells}<td class="num"><b>{_n(len(impact.rows))}</b></td>
<td class="num"><b>{_n(totals['subjects'])}</b></td></tr>
<tr><td class="muted">access again now</td>{restored_cells}<td class="num">{_n(restored)}</td>
<td></td></tr></tbody></table>
{_served_section(served, tz)}
<h2>Changed decisions</h2>
{_rows_table(impact.rows, report, rows)}

<h2>Unknowns still open</h2>
<p class="muted">Subjects the order denies now only because an attribute is unknown: an
attestation would settle each of them.</p>
<table><thead><tr><th>subject</th><th>employer</th><th>models denied</th>
<th>unknown</th></tr></thead><tbody>{unknown_rows or
"<tr><td colspan='4' class='muted'>none</td></tr>"}</tbody></table>
{f"<p class='muted'>… and {_n(more_unknowns)} more.</p>" if more_unknowns > 0 else ""}

<footer>Generated by Interlock from the event store as of position {_n(report.position)};
{chain}. Every decision here is the decision rule applied to the stored facts; times are shown
at UTC{_when(report.now, tz)[-6:]}.</footer>
</main></body></html>
"""
