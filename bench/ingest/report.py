"""The table of an ingestion benchmark's results, against the targets."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def rebuild_figures(r: dict[str, Any]) -> str:
    """The rebuilds' line: how many, and what each cost (`bench.ingest.rebuilds`)."""
    return (f"rebuilds: {r['rebuilds']:,} ({r['accounts']:,} accounts), "
            f"{r['ms_per_rebuild']} ms each "
            f"({r['events_per_rebuild']} events replayed, {r['us_per_replayed_event']} µs "
            f"each), + {r['store_ms_per_rebuild']} ms of store writes")


def report(r: dict[str, Any]) -> Table:
    """One row per measurement of `r` (the results written to ingest.json)."""
    raw = r["raw"]["rate"]
    table = Table("measurement", "events", "result", "vs target", title="LAER ingestion")
    table.add_row("produce (kafka-python, acks=1)", str(r["produce"]["events"]),
                  f"{r['produce']['rate']:,} ev/s", "")
    table.add_row(f"1. raw consume (no parse, no commit; median of {r['raw'].get('passes', 1)})",
                  str(r["raw"]["events"]), f"{raw:,} ev/s",
                  "reads: " + ", ".join(f"{x:,}" for x in r["raw"].get("rates", [raw])))
    floor = r.get("floor_postgresql")
    if floor:
        table.add_row(f"1b. floor: poll, parse, dedup ledger + offsets, postgresql "
                      f"(median of {floor.get('passes', 1)})",
                      str(floor["events"]), f"{floor['rate']:,} ev/s",
                      f"{floor['rate'] / raw:.2f}x raw (no domain)")
    for db in ("sqlite", "postgresql"):
        p = r[f"pipeline_{db}"]
        target = " (target >= 0.5x)" if db == "postgresql" else ""
        table.add_row(f"2. full pipeline, {db}", str(p["events"]), f"{p['rate']:,} ev/s",
                      f"{p['rate'] / raw:.2f}x raw{target}")
        if p.get("rebuilds"):
            table.add_row(f"2. account rebuilds of that run ({db})",
                          str(p["rebuilds"]["replayed_events"]), rebuild_figures(p["rebuilds"]),
                          "events replayed (left), per rebuild")
    held = r.get("held_back_postgresql")
    if held:
        pipeline = r["pipeline_postgresql"]["rate"]
        table.add_row("2c. full pipeline, billing held back, postgresql", str(held["events"]),
                      f"{held['rate']:,} ev/s",
                      f"{held['rate'] / pipeline:.2f}x all topics at once; "
                      f"{held['resequenced']:,} re-sequenced; usage and support first: "
                      f"{held['first_phase']['rate']:,} ev/s (all parked), then billing: "
                      f"{held['held_phase']['rate']:,} ev/s ({held['held_back']:,} events)")
        rebuilds = held.get("rebuilds")
        if rebuilds:
            table.add_row("2c. account rebuilds of that run", str(rebuilds["replayed_events"]),
                          rebuild_figures(rebuilds), "events replayed (left), per rebuild")
    lat = r["latency_postgresql"]
    table.add_row(f"3. produce->committed @ {lat.get('rate', 0):.0f} ev/s, postgresql",
                  str(lat.get("events")), f"p50 {lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms",
                  "p99 target < 250 ms")
    hold = lat.get("align_hold", {})
    if hold.get("records"):
        table.add_row("3. of which held by event-time alignment, per record", str(hold["records"]),
                      f"p50 {hold['p50_ms']} ms, p99 {hold['p99_ms']} ms, "
                      f"max {hold['max_ms']} ms", "")
    if lat.get("steady_p99_ms") is not None:
        table.add_row(f"3. the same without the first {lat['warmup_s']:g} s (warm-up)",
                      str(lat["steady_events"]),
                      f"p50 {lat['steady_p50_ms']} ms, p99 {lat['steady_p99_ms']} ms", "")
    one, two = r["one_process"], r["two_processes"]
    mode = one.get("mode", "live")
    rounds = f"median of {one.get('passes', 1)}"
    table.add_row(f"4. one `laer consume`, postgresql ({mode}, {rounds})", str(one["events"]),
                  f"{one['rate']:,} ev/s",
                  "runs: " + ", ".join(f"{x:,}" for x in one.get("rates", [one["rate"]])))
    ratio = f"{two['rate'] / one['rate']:.2f}x" if one["rate"] else "n/a"
    by_round = ", ".join(f"{x}x" for x in r.get("scale_ratio_by_round", []) if x)
    table.add_row(f"4. two `laer consume`, postgresql ({mode}, {rounds})", str(two["events"]),
                  f"{two['rate']:,} ev/s", f"{ratio} one (target 1.6x; by round: {by_round}); "
                  "runs: " + ", ".join(f"{x:,}" for x in two.get("rates", [two["rate"]])))
    long = r["long_run"]
    rss = ", ".join(f"{k.removeprefix('at_').replace('_events', '')}: {v} MB"
                    for k, v in long.get("rss_mb", {}).items())
    verdict = "flat" if long.get("rss_flat") else "grew"
    table.add_row("5. RSS of one `laer consume` (at n consumed)", str(long["events"]),
                  f"first {long.get('rss_first_mb')}, last {long.get('rss_last_mb')}, "
                  f"peak {long.get('rss_peak_mb')} MB ({rss}); {long['rate']:,} ev/s",
                  f"{verdict}: {long.get('rss_growth_mb', 0):+} MB, last quarter vs second "
                  "(target flat)")
    return table
