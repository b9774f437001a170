"""The step machine every playbook runs on.

A playbook is a list of `Step`s. One execution runs one step: it re-reads the signal and
the account, stops if the playbook's exit condition holds, performs the step's actions
(every message through the outreach gate) and queues the next step as a row due at its
instant (see steps.py). Nothing sleeps: the wait lives in the database. The effects live
elsewhere (delivery, scheduling, report); this module only decides what happens next.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

from prefect.runtime import flow_run

from flows.kit import clock
from flows.kit.context import ExitCheck, SignalInfo, Step, StepContext
from flows.kit.current import current_step
from flows.kit.delivery import Delivery, retry_deliveries
from flows.kit.records import load_account, load_signal, shared_reads
from flows.kit.registry import Playbook
from flows.kit.report import StepResult, publish_report, report_markdown
from flows.kit.retries import next_retry, retry_run_key, retrying_keys_in
from flows.kit.runtime import runtime
from flows.kit.scheduling import run_logger, run_name_for, schedule_step, tag_current_run
from flows.kit.settings import playbook_settings
from laer_domain.model import Account


def run_namer(playbook: str, first_step: str) -> Callable[[], str]:
    """A flow_run_name callable giving `playbook/ACCOUNT/step`."""

    def name() -> str:
        params = flow_run.parameters
        step = str(params.get("step", "start"))
        return run_name_for(playbook, str(params.get("account_id", "?")),
                            first_step if step == "start" else step)

    return name


def _delay_s(account: Account, signal: SignalInfo, current: Step, nxt: Step) -> float:
    settings = playbook_settings()
    if nxt.due is not None:  # an event-time instant: wait what is left of it
        # on a simulated clock "now" is event time itself; live, the account's clock is the
        # event time we know (the daily sweep keeps it within a day)
        since = clock.now() if clock.simulated() is not None else account.clock
        days = (nxt.due(account, signal) - since) / timedelta(days=1)
    else:
        days = nxt.day - current.day
    return max(0.0, days) * settings.day_seconds


def _schedule_retry(playbook: Playbook, account_id: str, signal_id: str, step: str,
                    seen: Sequence[Delivery]) -> str | None:
    # Messages of this step still waiting for another try: run the step again when the
    # earliest is due (its retry run tries them; nothing sleeps meanwhile).
    if not any(d.status == "retrying" for d in seen):
        # This run tried (or met) every message of its step; none waits. One set retrying
        # meanwhile by `laer actions retry` gets its run from that command.
        return None
    at = next_retry(runtime().reads, playbook.name, signal_id, step)
    if at is None:
        return None
    return schedule_step(playbook.name, account_id, signal_id, step,
                         (at - clock.now()).total_seconds(),
                         retry_run_key(playbook.name, signal_id, step, at),
                         [f"playbook:{playbook.name}", f"account:{account_id}", f"step:{step}",
                          "retry"])


def run_playbook(playbook: Playbook, steps: Sequence[Step], should_stop: ExitCheck,
                 account_id: str, signal_id: str, step: str = "start") -> str:
    """Run one step of `playbook` for an account (call this from the playbook's flow)."""
    names = [s.name for s in steps]
    name = names[0] if step == "start" else step
    if name not in names:
        raise ValueError(f"{playbook.name} has no step {step!r}; steps: {', '.join(names)}")
    index = names.index(name)
    current = steps[index]
    logger = run_logger()
    here = current_step()
    if here is not None:
        here.name = run_name_for(playbook.name, account_id, name)
    result = StepResult(step=name)
    # Messages this step could not deliver before go first, whatever the exit check says now.
    with shared_reads() as session:  # the step's first reads share one session
        waiting = retrying_keys_in(session, playbook.name, signal_id, name)
        if not waiting:
            signal = load_signal(signal_id)
            account = load_account(account_id)
    if waiting:  # read the rows after sending, as the exit check must see them
        result.retried = retry_deliveries(playbook.name, signal_id, name, waiting)
        signal = load_signal(signal_id)
        account = load_account(account_id)
    ctx: StepContext | None = None
    if signal is None:
        result.stopped = f"signal {signal_id} not found"
    elif signal.retracted_at is not None:  # a late event rebuilt the account without it
        result.stopped = f"signal {signal_id} retracted at {signal.retracted_at.isoformat()}"
    elif account is None:
        result.stopped = f"account {account_id} not found"
    else:
        result.stopped = should_stop(account, signal, current)
    if result.stopped is None and account is not None and signal is not None:
        ctx = StepContext(playbook, account, signal, name)
        current.run(ctx)
        settings = playbook_settings()
        base = f"{playbook.deployment}:{signal_id}"
        tags = [f"playbook:{playbook.name}", f"account:{account_id}",
                f"stage:{account.stage.value}", f"signal:{signal.kind}"]
        tag_current_run([*tags, f"step:{name}"])
        if ctx.retry_at is not None:  # quiet hours: ask the gate again when they end
            wait = (ctx.retry_at - settings.now()).total_seconds() * settings.day_seconds / 86400
            at = ctx.retry_at.strftime("%Y%m%dT%H%M")
            result.scheduled.append(schedule_step(
                playbook.name, account_id, signal_id, name, wait, f"{base}:{name}@{at}",
                [*tags, f"step:{name}"]))
        if index + 1 < len(steps):
            nxt = steps[index + 1]
            result.scheduled.append(schedule_step(
                playbook.name, account_id, signal_id, nxt.name,
                _delay_s(account, signal, current, nxt), f"{base}:{nxt.name}",
                [*tags, f"step:{nxt.name}"]))
    retry = _schedule_retry(playbook, account_id, signal_id, name,
                            [*result.retried, *(ctx.deliveries if ctx else [])])
    if retry is not None:
        result.scheduled.append(f"retry of {retry}")
    if result.stopped:
        logger.info("stopped: %s", result.stopped)
    publish_report(playbook.name, report_markdown(playbook, account_id, name, signal, account,
                                                  ctx, result))
    done = [f"{d.kind}:{d.status}" for d in (ctx.deliveries if ctx else [])]
    return f"{name}: " + (f"stopped ({result.stopped})" if result.stopped
                          else ", ".join(done) or "nothing to do")
