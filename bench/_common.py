"""Small helpers shared by the benchmark scripts in bench/: statistics over repetitions,
/proc readings, and replacing one script's section of bench/RESULTS.md.

Machine information comes from ``compression.machine_info`` (bench/compression.py), so every
section of RESULTS.md describes its machine the same way.
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
HZ = os.sysconf("SC_CLK_TCK")

RESULTS_PREAMBLE = (
    "# corral benchmark results\n\nWritten by the scripts in `bench/`; each script replaces "
    "only its own section.\n\n"
)


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """± half the min-max range, as % of the median ("" for a single value)."""
    if len(values) < 2:
        return ""
    med = statistics.median(values)
    return f" ±{50.0 * (max(values) - min(values)) / med:.0f}%" if med else ""


def replace_section(title: str, section: str, path: Path = RESULTS) -> None:
    """Put ``section`` (which starts with the line ``title``) into ``path`` in place of the
    section of that title, or at the end; every other section is left as it was."""
    text = path.read_text() if path.exists() else RESULTS_PREAMBLE
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n\n", text, count=1)
        text = text.rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    path.write_text(text)


def proc_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of one process in clock ticks (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


PF_KTHREAD = 0x00200000


def all_ticks(exclude: set[int]) -> dict[int, int]:
    """utime + stime of every user-space process but ``exclude`` (to see other load on the
    machine). Kernel threads are left out: ksoftirqd does much of the benchmark's own
    loopback TCP work, which is not interference."""
    ticks = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in exclude:
            with contextlib.suppress(OSError, IndexError, ValueError):  # it exited meanwhile
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[6]) & PF_KTHREAD:
                    continue
                ticks[int(name)] = int(fields[11]) + int(fields[12])
    return ticks


def other_cpu(before: dict[int, int], after: dict[int, int], seconds: float) -> float:
    """CPU used by the processes of ``after`` since ``before``, in % of one core."""
    used = sum(t - before.get(pid, 0) for pid, t in after.items())
    return 100.0 * used / HZ / max(seconds, 1e-9)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def rss_kib(pid: int) -> int:
    """VmRSS summed over the process tree of ``pid``, in KiB."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
    return total
