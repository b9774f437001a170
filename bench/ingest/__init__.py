"""Ingestion benchmark: `python -m bench.ingest [--events N] [--long N] [--bootstrap HOST:PORT]`.

In one run, on one broker (its own LocalKafka on a free port unless --bootstrap is given):

1. raw kafka-python consumption of N records (no parsing, no commits);
2. the full pipeline (decode, validate, apply, persist with offsets; `ConsumerLoop` in this
   process) on SQLite and on PostgreSQL;
   2c. the same on PostgreSQL over a backlog read with the billing topic held back until
   usage and support are read to their end (its rate, and the events re-sequenced);
   each of these runs also counts and times its account rebuilds (`rebuilds`);
3. produce -> committed latency at a fixed rate (default 1,000 events/s; p50, p99), the
   producer being a separate process;
4. one vs two `laer consume` processes in one group (PostgreSQL), over a backlog
   (`--scale-mode live`: events produced meanwhile);
5. the RSS of a `laer consume` process over a long run (`--long`, default 30,000 events).

Prints a table and writes bench/results/ingest.json.
"""

# `run` holds the command line and the order; each measurement has its module (`raw`,
# `floor`, `pipeline`, `held_back`, `latency`, `processes`, with `memory` for the RSS
# figures and `rebuilds` for the rebuild timings), and `report` draws the table.
