"""CPU seconds the throwaway Dovecot spent, read from /proc (master, children, and reaped children).

The wire limit is set by the server, so its CPU time per phase shows how busy
it was while we waited, independently of what else the machine was running.
"""
from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name, which may contain spaces.
    return text.rsplit(")", 1)[1].split()


def _processes() -> dict[int, list[str]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                found[int(entry)] = fields
    return found


def _master_pid(conf_path: Path) -> int | None:
    needle = str(conf_path).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and b"dovecot" in cmdline.split(b"\0", 1)[0] and b"doveadm" not in cmdline:
            return int(entry)
    return None


def dovecot_cpu_seconds(conf_path: Path) -> float | None:
    """User + system CPU of the Dovecot started with ``conf_path`` and all its processes so far."""
    master = _master_pid(conf_path)
    if master is None:
        return None
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, fields in processes.items():
        children.setdefault(int(fields[1]), []).append(pid)  # field 4: ppid
    total, stack = 0, [master]
    while stack:
        pid = stack.pop()
        fields = processes.get(pid)
        if fields:
            # utime, stime, cutime, cstime (fields 14-17): a reaped child's time moves into its parent's.
            total += sum(int(v) for v in fields[11:15])
        stack.extend(children.get(pid, []))
    return total / _TICKS
