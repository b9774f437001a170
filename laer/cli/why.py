"""`laer why`: why an action happened, from the events that raised its signal to its delivery.

Reads the stored chain (persistence/provenance.py); `--json` for scripts, a tree for people.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from laer.cli.output import JsonFlag, console, err, print_json
from laer.cli.read import read_session

if TYPE_CHECKING:
    from rich.tree import Tree


def why(action_id: Annotated[int | None, typer.Argument(help="An action's id.")] = None,
        signal: Annotated[str | None, typer.Option("--signal", help="A signal's id.")] = None,
        run: Annotated[int | None, typer.Option("--run", help="A playbook run's id.")] = None,
        as_json: JsonFlag = False) -> None:
    """Show why an action, signal or run happened: events, signal, run, step, gate, delivery."""
    from persistence.provenance import action_chain, run_chain, signal_chain

    given = [x for x in (action_id, signal, run) if x is not None]
    if len(given) != 1:
        err().print("[red]give one of: ACTION_ID, --signal ID, --run ID[/red]")
        raise typer.Exit(2)
    with read_session() as session:
        if action_id is not None:
            chain, what = action_chain(session, action_id), f"action {action_id}"
        elif signal is not None:
            chain, what = signal_chain(session, signal), f"signal {signal!r}"
        else:
            assert run is not None
            chain, what = run_chain(session, run), f"playbook run {run}"
    if chain is None:
        err().print(f"[red]no {what}[/red]")
        raise typer.Exit(1)
    if as_json:
        print_json(chain)
        return
    console().print(render(chain))


def _signal_tree(tree: Tree, signal: dict[str, Any] | None) -> None:
    if signal is None:
        tree.add("[red]signal not stored[/red]")
        return
    node = tree.add(f"[bold]signal[/bold] {signal['id']} [bold]{signal['kind']}[/bold] at "
                    f"{signal['at']} (stage {signal['stage']}), rule [cyan]{signal['rule']}"
                    f"[/cyan]" + (f" [red]retracted {signal['retracted_at']}[/red]"
                                  if signal["retracted_at"] else ""))
    if signal["details"]:
        node.add("observed: " + json.dumps(signal["details"], sort_keys=True, default=str))
    if signal["raised_by"] == "time":
        node.add(_clock_line(signal))
    for e in signal["events"]:
        node.add(f"event {e['id']} {e['type']} at {e['time']} from {e['source']}"
                 if e["stored"] else f"event {e['id']} [yellow](not in the timeline)[/yellow]")


def _clock_line(signal: dict[str, Any]) -> str:
    """What raised a time rule's signal: the sweep at an instant, or an event's time."""
    clock = signal.get("clock")
    due = f"raised by a time rule due at {signal['at']}"
    if not clock:
        return f"{due} (what moved the clock past it was not recorded)"
    if clock["by"] == "sweep":
        return f"{due}: the sweep at {clock['at']} moved the clock past it"
    e = clock.get("event") or {}
    what = (f"event {e['id']} {e['type']} at {e['time']} from {e['source']}" if e.get("stored")
            else f"event {e.get('id')} [yellow](not in the timeline)[/yellow]")
    return f"{due}: {what} moved the clock past it"


def _coalesced_lines(node: Tree, run: dict[str, Any]) -> None:
    """The run a coalesced signal joined, or the coalesced signals a run took in."""
    into = run.get("coalesced_into")
    if into:
        node.add(f"coalesced into run #{into['id']} {into['playbook']} {into['state']} "
                 f"(signal {into['signal_id']}) · {into['why']}")
    for joined in run.get("coalesced") or []:
        node.add(f"took in signal {joined['signal_id']} (run #{joined['id']} Coalesced) · "
                 f"laer why --signal {joined['signal_id']}")


def _run_line(run: dict[str, Any]) -> str:
    flow = f", flow run {run['flow_run_id']}" if run.get("flow_run_id") else ""
    return (f"[bold]run[/bold] #{run['id']} {run['playbook']} {run['state']} "
            f"(signal {run['signal_id']}{flow}) · laer why --run {run['id']}")


def _step_line(step: dict[str, Any]) -> str:
    attempt = f" attempt {step['attempt']}" if step.get("attempt") else ""
    return (f"[bold]step[/bold] {step.get('run_name') or step.get('step')}{attempt} · "
            f"task run {step.get('task_run_id') or '-'} · {step.get('status', '?')} · "
            f"key {step.get('key')}")


def _action_tree(tree: Tree, action: dict[str, Any]) -> None:
    to = action["recipient"] or action["role"] or "-"
    reason = f": {action['reason']}" if action["reason"] else ""
    node = tree.add(f"[bold]action[/bold] {action['id']} {action['kind']} "
                    f"{action['template'] or ''} to {to} · {action['subject']!r} · "
                    f"[bold]{action['status']}[/bold]{reason}")
    for d in action["decisions"]:
        gate = d.get("gate") or {}
        said = gate.get("decision", d["status"])
        extra = gate.get("channel") or gate.get("reason") or d.get("reason") or ""
        until = f" until {gate['until']}" if gate.get("until") else ""
        by = (f" · step {d['step_key']} attempt {d.get('attempt')} task run "
              f"{d.get('task_run_id')}" if d.get("step_key") else "")
        line = node.add(f"gate at {gate.get('at', d['at'])}: [bold]{said}[/bold] {extra}"
                        f"{until} (cap {gate.get('frequency_cap')} in "
                        f"{float(gate.get('window_days') or 0):g} days){by}" if gate else
                        f"{d['at']}: {d['status']}{by}")
        for used in gate.get("used_by") or []:
            line.add(f"cap used by action {used['action_id']} "
                     f"{used.get('playbook', '')} {used.get('subject', '')!r} sent "
                     f"{used.get('sent_at', '?')} · {used.get('why', '')}")
    delivery = action.get("delivery")
    if delivery and delivery["tries"]:
        sent = node.add(f"delivery {delivery['channel']} Message-ID {delivery['message_id']}"
                        f" · {delivery['status']} after {delivery['attempts']} attempt(s)")
        for t in delivery["tries"]:
            code = f" code {t['code']}" if t.get("code") is not None else ""
            sent.add(f"try {t['attempt']} at {t['at']}: {t['outcome']}{code}"
                     + (f" {t['error']}" if t.get("error") else ""))


def render(chain: dict[str, Any]) -> Tree:
    """The chain as a tree a person reads top-down: events to delivery."""
    from rich.tree import Tree

    if "action" in chain:
        action = chain["action"]
        tree = Tree(f"[bold]why action {action['id']}[/bold] ({action['account_id']})")
        _signal_tree(tree, chain["signal"])
        if chain["run"]:
            tree.add(_run_line(chain["run"]))
        for step in chain["steps"]:
            tree.add(_step_line(step))
        _action_tree(tree, action)
        return tree
    runs = chain["runs"] if "runs" in chain else [chain["run"]]
    tree = Tree("[bold]why " + (f"signal {chain['signal']['id']}" if "runs" in chain
                                else f"run {chain['run']['id']}") + "[/bold]")
    _signal_tree(tree, chain["signal"])
    for run in runs:
        node = tree.add(_run_line(run))
        _coalesced_lines(node, run)
        for step in run["steps"]:
            node.add(_step_line(step))
        for action in run["actions"]:
            _action_tree(node, action)
    if not runs:
        tree.add("no playbook run started for it")
    return tree
