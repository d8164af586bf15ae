"""The `interlock` command line, by audience: `decisions` (apply, decide, position),
`operations` (serve, the Kafka processes, snapshots, the demo, docs, tokens), `officer`
(history, impact, diff, explain), `orders` (sign, report), `verification` (replay, verify,
checkpoint, seal) and `served_log` (the `decisions` sub-app). `shell` holds the application,
its global options and the helpers they share."""

from interlock.cli import decisions, officer, operations, orders, verification
from interlock.cli.served_log import decisions_app
from interlock.cli.shell import Interlock, app, emit, fail, literal, out, reflow

app.add_typer(operations.token_app, name="token")
app.add_typer(decisions_app, name="decisions")
reflow(app)

__all__ = ["Interlock", "app", "decisions", "emit", "fail", "literal", "officer", "operations",
           "orders", "out", "verification"]
