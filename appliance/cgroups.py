"""One sampler of every running server's cgroup: memory now and at peak, CPU time, OOM kills.

Every EVERY seconds one executor hop reads the files of all running servers (the kernel's
Documentation/admin-guide/cgroup-v2.rst: memory.current, memory.peak, memory.events'
oom_kill, cpu.stat's usage_usec; on a cgroup v1 machine the memory and cpuacct
controllers' equivalents). The readings feed the OOM notices (with OOMPolicy=continue
systemd records nothing when the kernel kills a notebook kernel), the admin page, usage
history and the metrics. A 30-minute memory history per server draws the admin page's
sparklines.
"""

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: How often every running server is read.
EVERY = 2.0
#: Memory history kept per server, and how often a point is added to it.
HISTORY_SECONDS = 30 * 60.0
HISTORY_EVERY = 10.0


@dataclass(frozen=True)
class Reading:
    """One server's counters at one moment; None where the file cannot be read."""

    at: float
    memory: int | None = None
    peak: int | None = None
    cpu_usec: int | None = None
    oom_kills: int | None = None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_keyed(path: Path, key: str) -> int | None:
    """The value of "key N" in a flat-keyed file (memory.events, cpu.stat)."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return None


def read(cgroup: str, root: Path = CGROUP_ROOT) -> Reading:
    """A server's counters: cgroup v2 files, else the v1 controllers' (in nanoseconds there)."""
    rel = cgroup.lstrip("/")
    v2 = root / rel
    if (v2 / "memory.current").exists():
        return Reading(time.time(), _read_int(v2 / "memory.current"),
                       _read_int(v2 / "memory.peak"), _read_keyed(v2 / "cpu.stat", "usage_usec"),
                       _read_keyed(v2 / "memory.events", "oom_kill"))
    memory = root / "memory" / rel
    cpu_ns = _read_int(root / "cpuacct" / rel / "cpuacct.usage")
    return Reading(time.time(), _read_int(memory / "memory.usage_in_bytes"),
                   _read_int(memory / "memory.max_usage_in_bytes"),
                   cpu_ns // 1000 if cpu_ns is not None else None,
                   _read_keyed(memory / "memory.oom_control", "oom_kill"))


def read_all(cgroups: dict[str, str]) -> dict[str, Reading]:
    """read() for many servers (keyed by unit): one executor hop per round."""
    return {unit: read(cgroup) for unit, cgroup in cgroups.items()}


class Sampler:
    """The latest readings and the memory history of every running server, by unit."""

    def __init__(self) -> None:
        self.latest: dict[str, Reading] = {}
        self._previous: dict[str, Reading] = {}
        self.history: dict[str, deque[tuple[float, int]]] = {}

    def record(self, readings: dict[str, Reading]) -> None:
        """Take a round of readings; forget servers no longer in it."""
        for unit in set(self.latest) - set(readings):
            self.forget(unit)
        for unit, reading in readings.items():
            if unit in self.latest:
                self._previous[unit] = self.latest[unit]
            self.latest[unit] = reading
            points = self.history.setdefault(unit, deque(maxlen=int(HISTORY_SECONDS //
                                                                    HISTORY_EVERY) + 1))
            if reading.memory is not None and (not points or
                                               reading.at - points[-1][0] >= HISTORY_EVERY):
                points.append((reading.at, reading.memory))

    def forget(self, unit: str) -> None:
        """Drop a server that stopped."""
        for table in (self.latest, self._previous, self.history):
            table.pop(unit, None)

    def cpu_cores(self, unit: str) -> float | None:
        """CPU used over the last round, in cores (1.0 = one core busy)."""
        now, before = self.latest.get(unit), self._previous.get(unit)
        if (now is None or before is None or now.cpu_usec is None or before.cpu_usec is None
                or now.at <= before.at):
            return None
        return max(0.0, (now.cpu_usec - before.cpu_usec) / 1e6 / (now.at - before.at))


async def sample(app) -> None:
    """One round: read every running server; a rise in oom_kill becomes a notice."""
    spawner = app["spawner"]
    servers = {s.unit: s for s in spawner.running() if s.cgroup}
    readings = await asyncio.get_running_loop().run_in_executor(
        None, read_all, {unit: s.cgroup for unit, s in servers.items()})
    spawner.sampler.record(readings)
    for unit, reading in readings.items():
        if reading.oom_kills is not None and unit in servers:
            spawner.oom_counted(servers[unit], reading.oom_kills)


def figures(sampler: Sampler, server) -> dict:
    """A ready server's live numbers as the API and the admin page give them: memory now and
    its limit (bytes), CPU as a percentage of its quota; None where unknown."""
    out = {"memory": None, "memory_limit": None, "cpu_percent": None}
    if not server.ready:
        return out
    profile = server.profile
    out["memory_limit"] = profile.memory if profile is not None else None
    reading = sampler.latest.get(server.unit)
    out["memory"] = reading.memory if reading is not None else None
    cores = sampler.cpu_cores(server.unit)
    if cores is not None and profile is not None and profile.cpu:
        out["cpu_percent"] = round(100 * cores / profile.cpu, 1)
    return out
