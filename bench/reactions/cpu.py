"""CPU seconds used by each child's process group, read from /proc (Linux; empty elsewhere).

Wall-clock rates swing with whatever else the machine runs; CPU per step does not.
"""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def group_cpu_s(pgid: int) -> tuple[float, float]:
    """User + system CPU seconds of the leader of group `pgid`, and of the rest of the group
    (live members and the children they reaped)."""
    leader = rest = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        # after the name: state ppid pgrp ...; utime stime cutime cstime are fields 14-17
        if int(fields[2]) == pgid:
            own, reaped = sum(map(int, fields[11:13])), sum(map(int, fields[13:15]))
            if int(stat.parent.name) == pgid:
                leader, rest = leader + own, rest + reaped
            else:
                rest += own + reaped
    return leader / TICK, rest / TICK


def snapshot(groups: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process group's leader (`name`) and of its
    children (`name+`, e.g. the step reporter of `serve`), where it has any."""
    out: dict[str, float] = {}
    for name, pgid in groups.items():
        out[name], children = group_cpu_s(pgid)
        if children:
            out[f"{name}+"] = children
    return out


def per_unit_ms(before: dict[str, float], after: dict[str, float], units: int
                ) -> dict[str, float]:
    """Milliseconds of CPU per unit of work of each group between two snapshots."""
    if units <= 0:
        return {}
    return {name: round(1000 * (after[name] - before.get(name, 0.0)) / units, 2)
            for name in after if after[name] > before.get(name, 0.0)}
