"""CPU seconds spent by process trees (Linux /proc), for benchmarks whose work runs in short-lived children.

A tree's CPU is, for each live process in it, its own time plus the time of its children that it has reaped
(``utime + stime + cutime + cstime`` in ``/proc/PID/stat``). A child that exits between two readings moves
from its own counters into its parent's ``c*`` counters, so the difference of two readings counts every
process that ran in between, provided each parent reaps its children (an orphan adopted by init is lost).
Subtrees rooted at ``exclude`` are left out (another contender's service that happens to be our child).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, CPU seconds of the process and its reaped children), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # after the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime
    return int(fields[1]), sum(int(x) for x in fields[11:15]) / _TICK


def tree_cpu_seconds(roots: Iterable[int], exclude: Iterable[int] = ()) -> float:
    """CPU seconds so far of ``roots`` and all their live descendants (each counted once), minus ``exclude``'s
    subtrees."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (s := _stat(int(entry))) is not None:
            stats[int(entry)] = s
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    skip, seen, total = set(exclude), set(), 0.0
    stack = [p for p in roots if p in stats and p not in skip]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += stats[pid][1]
        stack.extend(c for c in children.get(pid, ()) if c not in skip)
    return total


def listener_pids(port: int) -> list[int]:
    """Processes holding a TCP socket that listens on ``port`` (any address), found through /proc/net."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                        inodes.add(f"socket:[{cols[9]}]")
        except OSError:
            continue
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") in inodes for fd in fds):
                pids.append(int(entry))
        except OSError:
            continue
    return sorted(pids)
