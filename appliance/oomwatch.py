"""Notice when the kernel's OOM killer ends a process inside a user's server.

With OOMPolicy=continue a kernel that outgrows MemoryMax is killed while the notebook server
lives on; systemd records nothing, so the hub reads the cgroup's memory.events
(Documentation/admin-guide/cgroup-v2.rst: "oom_kill") and tells the user in words.
"""

import asyncio
import logging
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
POLL_SECONDS = 2.0


def oom_kills(cgroup: str) -> int | None:
    """The oom_kill counter of a cgroup v2 group, or None where it cannot be read."""
    try:
        text = (CGROUP_ROOT / cgroup.lstrip("/") / "memory.events").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return None


def read_counters(cgroups: dict[str, str]) -> dict[str, int | None]:
    """oom_kills for many servers (keyed by unit) at once: one executor hop per poll."""
    return {unit: oom_kills(cgroup) for unit, cgroup in cgroups.items()}


async def watch(spawner) -> None:
    """Poll running servers' counters; a rise becomes a notice on the server."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(POLL_SECONDS)
        servers = {s.unit: s for s in spawner.running() if s.cgroup}
        counts = await loop.run_in_executor(
            None, read_counters, {u: s.cgroup for u, s in servers.items()})
        for unit, count in counts.items():
            if count is not None and unit in servers:
                spawner.oom_counted(servers[unit], count)
