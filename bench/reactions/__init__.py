"""Reactions benchmark: how fast and how surely signals become playbook steps and actions.

    python -m bench.reactions [--burst 1000] [--steady-s 120] [--baseline-runs N]
                              [--backends embedded,postgresql] [--json]

For each backend it starts the system as `laer up` does: a Prefect server (embedded: its
SQLite database and a SQLite app database; postgresql: both on PostgreSQL), an SMTP sink
writing an mbox, and `laer serve` + `laer dispatch` as child processes (logs in a temp dir).
Accounts are built through the real domain (LifecycleService + UnitOfWork), one recipe per
playbook in flows/, and the signals the domain raised are held back, then written as the
consumer writes them (signal + outbox row in one transaction):

  burst   N signals over every playbook, all queued at once: steps executed per second
          (playbook_steps.done_at; playbook_runs when no step row exists, the old shape of
          one Prefect flow run per step), and the report lag: from the last step done until
          Prefect shows every one as a completed task run (flow run in the old shape).
  steady  5 signals/s for --steady-s seconds: signal -> first action latency p50/p99
          (outbox created_at -> earliest actions.created_at of that signal).
  lost    an (account, playbook) whose first step did not execute within --bound-s.
  dupl.   extra copies of a Message-ID in the mbox, extra Prefect runs of one step name,
          extra executions of one step in the store.
  anchor  the same number of trivial flow runs (a flow with no project code) created with
          the Prefect client on a deployment that `flow.serve` executes; runs/s completed.

Targets: >= 50 steps/s on the embedded default, steady p99 < 5 s, nothing lost or
duplicated, steps/s >= 10x the baseline's runs/s. Ctrl-C stops every child.
"""

# `workload` builds and releases the signals, `system` starts and stops the processes,
# `measure` reads and computes the figures, `prefect_view` what the Prefect API shows,
# `baseline` (+ `noop_flow`) the plain Prefect anchor, `session` one backend, `run` the CLI.
