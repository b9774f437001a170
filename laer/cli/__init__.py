"""`laer`: run the consumers, the dispatcher and the playbooks; inspect accounts."""

from __future__ import annotations

import typer

from laer.cli import actions, backtest, dlq, read, run, services, steps, why

# no locals in tracebacks: they can hold database URLs and other secrets
app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_show_locals=False)
app.add_typer(services.kafka_app, name="kafka")
app.add_typer(services.db_app, name="db")
# The order of `laer --help`.
for command in (run.consume, run.dispatch, run.serve, services.up, services.simulate,
                run.sweep, read.accounts, read.account, why.why, read.tasks, read.status,
                read.schema, read.playbooks, backtest.backtest):
    app.command()(command)
app.add_typer(dlq.dlq_app, name="dlq")
app.add_typer(actions.actions_app, name="actions")
app.add_typer(steps.steps_app, name="steps")
