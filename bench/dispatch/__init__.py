"""Run creation benchmark: a plain client loop versus the dispatcher draining stored signals.

    python -m bench.dispatch [--runs 200] [--rounds 6] [--burst 200]
                             [--backends sqlite,postgresql]

For each Prefect backend (a local server on SQLite, then on PostgreSQL) it measures, in one
run against the same server: a plain loop creating N flow runs from a deployment with one
client and a cached deployment id; the dispatcher draining N stored signals into runs. Each
is timed until the server has also stored the events it caused (every run's state event; the
dispatcher's journey event per signal). The dispatcher is measured once more with journey
events off, to show what they cost. The N runs are split into rounds that rotate which goes
first. Then a burst in which the dispatcher drains while concurrent creators overload the
server, after which it counts duplicated and lost runs. Prints a table; writes
bench/results/dispatch.json.
"""

# `run` holds the command line and one backend's session; `server` the Prefect side (its
# database, the deployment, its stored events), `outbox` the LAER side (stored signals, the
# dispatcher draining them); `rate` and `burst` are the two measurements.
