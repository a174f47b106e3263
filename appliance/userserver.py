"""One user's notebook server as the hub sees it: its state, paths and bookkeeping.

A plain record: the spawner changes it (state only through Spawner.set_state), pages and the
API read it. The store keeps a ServerRecord of it so a restarted hub can adopt the unit.
"""

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum

from appliance import units
from appliance.progress import Progress
from appliance.store import ServerRecord
from appliance.upstream import Upstream


class ServerState(StrEnum):
    """Where a server is in its life; the values are what the store and the API say."""

    STOPPED = "stopped"
    STARTING = "starting"  # queued, launching, or waiting for Jupyter to answer
    RUNNING = "running"
    STOPPING = "stopping"


@dataclass(eq=False)
class Server:
    """One user's (default) server."""

    user: str
    name: str
    unit: str
    paths: units.ServerPaths
    url: str
    state: ServerState = ServerState.STOPPED
    started: float | None = None
    last_activity: float | None = None
    #: Why the server last stopped or failed, in words for its user.
    message: str = ""
    token: str = ""
    upstream: Upstream | None = None
    progress: Progress = field(default_factory=Progress)
    task: asyncio.Task | None = None
    exit_task: asyncio.Task | None = None
    #: Set when the unit ended while the server was still starting (the spawn gives up).
    exited: bool = False
    #: Memory the admission queue holds for this server while it starts and runs (bytes).
    reserved_memory: int = 0
    cgroup: str = ""
    #: oom_kill count seen in the cgroup; -1 = take the next reading as the baseline.
    oom_kills: int = 0
    #: Something the user should know about a running server (a kernel killed for memory).
    notice: str = ""

    @property
    def ready(self) -> bool:
        """True when the server answers and requests can be relayed."""
        return self.state == ServerState.RUNNING

    @property
    def pending(self) -> str | None:
        """JupyterHub's pending field: 'spawn', 'stop' or None."""
        return {ServerState.STARTING: "spawn", ServerState.STOPPING: "stop"}.get(self.state)

    def record(self) -> ServerRecord:
        """The row the store keeps."""
        return ServerRecord(self.user, self.name, self.unit, str(self.paths.socket),
                            str(self.state), self.started, self.last_activity, self.message)
