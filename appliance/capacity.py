"""How much memory the users' servers may have together, and how much they use now.

The cap is the servers' slice's MemoryMax (systemd.resource-control(5); the shipped slice says
90 % of RAM); where the slice sets none, the machine's RAM less a reserve for the OS and the hub
(psutil, the one psutil importer), so a class never pushes the whole machine into its OOM
killer.
Use is what the slice's cgroup holds less its page cache (memory.current - file + shmem:
cgroup-v2.rst; a class that read /srv/data leaves cache charged to the slice that the kernel
drops only under pressure, and admission must not wait for pressure it prevents), or the
machine's used memory where cgroup accounting cannot be read (a container with read-only
cgroup v1 controllers), of which the queue counts what it grew by since no server ran.
"""

import asyncio
import logging
import os

import psutil

from appliance.cgroups import CGROUP_ROOT
from appliance.errors import SystemdError
from appliance.spawnqueue import Memory
from appliance.systemd import SLICE, Systemd

log = logging.getLogger(__name__)

#: What systemd reports for "no limit" and "not known" in uint64 properties.
UNSET = 2**64 - 1
#: What servers leave to the OS, the hub and sshd when their slice sets no MemoryMax: this
#: share of RAM, at least RESERVE_MIN bytes.
RESERVE_SHARE = 0.1
RESERVE_MIN = 2**30


async def slice_memory(systemd: Systemd, slice_name: str, count_limits: bool) -> Memory:
    """The memory picture for the admission queue (count_limits: ignore actual use)."""
    host = await asyncio.get_running_loop().run_in_executor(None, psutil.virtual_memory)
    try:
        cap = await systemd.unit_property(slice_name, SLICE, "MemoryMax")
        cgroup = await systemd.unit_property(slice_name, SLICE, "ControlGroup")
    except SystemdError as e:
        log.warning("cannot read %s's memory (%s); using the machine's", slice_name, e)
        cap, cgroup = UNSET, ""
    if cap in (None, UNSET):
        cap = host.total - max(int(host.total * RESERVE_SHARE), RESERVE_MIN)
    cap = min(cap, host.total)
    if count_limits:
        return Memory(cap)
    current = await asyncio.get_running_loop().run_in_executor(None, cgroup_use, cgroup)
    if current is None:
        return Memory(cap, host.total - host.available, machine_wide=True)
    return Memory(cap, current)


def cgroup_use(cgroup: str) -> int | None:
    """A cgroup's memory less its page cache, or None where it cannot be read."""
    if not cgroup:
        return None
    where = CGROUP_ROOT / cgroup.lstrip("/")
    try:
        current = int((where / "memory.current").read_text())
        stat = dict(line.split() for line in (where / "memory.stat").read_text().splitlines())
        return current - int(stat["file"]) + int(stat.get("shmem", 0))
    except (OSError, ValueError, KeyError):
        return None


async def host_figures(spawner) -> dict:
    """The machine as the admin page and /hub/api/stats show it: the servers' memory against
    their cap and the RAM, the CPU load, servers running and pending."""
    cfg = spawner.cfg.spawner
    memory = await slice_memory(spawner.systemd, cfg.slice, False)
    total = (await asyncio.get_running_loop().run_in_executor(None, psutil.virtual_memory)).total
    servers = list(spawner.servers.values())
    return {"memory_used": memory.in_use, "memory_cap": memory.cap, "memory_total": total,
            "load": os.getloadavg()[0], "cores": os.cpu_count() or 1,
            "running": sum(1 for s in servers if s.ready),
            "pending": sum(1 for s in servers if s.pending)}
