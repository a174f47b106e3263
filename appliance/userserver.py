"""One user's notebook server as the hub sees it: its state, paths and bookkeeping.

A plain record: the spawner changes it (state only through Spawner.set_state), pages and the
API read it. The store keeps a ServerRecord of it so a restarted hub can adopt the unit.
"""

import asyncio
import re
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import quote

from appliance import units
from appliance.errors import BadRequest
from appliance.profiles import Profile
from appliance.progress import Progress
from appliance.store import ServerRecord
from appliance.upstream import Upstream

#: A named server's name: it becomes part of a URL, a unit name and a directory name.
_SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
#: First path segments of a Jupyter server's own URLs: a named server called so would hide
#: them (/user/<name>/api/... must reach the default server).
RESERVED_NAMES = frozenset({
    "api", "tree", "notebooks", "edit", "files", "view", "terminals", "lab", "static",
    "nbextensions", "kernelspecs", "custom", "login", "logout", "nbconvert", "voila", "doc"})


def check_server_name(name: str) -> str:
    """A valid named server's name, or BadRequest saying what names may look like."""
    if not _SERVER_NAME.fullmatch(name) or name in RESERVED_NAMES:
        raise BadRequest(f"invalid server name {name!r}",
                         user_message=f"{name!r} cannot be a server's name: use up to 32 "
                                      "letters, digits, '.', '-' or '_', not one of Jupyter's "
                                      "own paths (api, tree, lab, ...).")
    return name


class ServerState(StrEnum):
    """Where a server is in its life; the values are what the store and the API say."""

    STOPPED = "stopped"
    STARTING = "starting"  # queued, launching, or waiting for Jupyter to answer
    RUNNING = "running"
    STOPPING = "stopping"


@dataclass(eq=False)
class Server:
    """One of a user's servers: the default one (name "") or a named one."""

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
    #: The frozen profile it was (or will be) started with.
    profile: Profile | None = None
    #: jupyterhub-singleuser, which logs its browsers in itself (as started: an adopted
    #: server's is read back from its unit, not from today's profile).
    hub_oauth: bool = False
    progress: Progress = field(default_factory=Progress)
    task: asyncio.Task | None = None
    exit_task: asyncio.Task | None = None
    #: Set when the unit ended while the server was still starting (the spawn gives up).
    exited: bool = False
    #: Set once StartTransientUnit succeeded for the current spawn.
    unit_started: bool = False
    cgroup: str = ""
    #: oom_kill count seen in the cgroup; -1 = take the next reading as the baseline.
    oom_kills: int = 0
    #: Something the user should know about a running server (a kernel killed for memory).
    notice: str = ""
    #: Requests the proxy is relaying to it now, websockets aside (the culler: in use).
    requests_in_flight: int = 0
    #: The cgroup's counters when it last stopped (cgroups.Reading), for usage history.
    last_reading: object = None

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
                            str(self.state), self.started, self.last_activity, self.message,
                            self.profile.name if self.profile else "")

    @property
    def key(self) -> tuple[str, str]:
        """(user, server name): how the spawner finds it."""
        return (self.user, self.name)

    @property
    def route(self) -> str:
        """How hub URLs name it after /hub/spawn/ and the like: alice, or alice/lab."""
        return quote(self.user) + (f"/{quote(self.name)}" if self.name else "")

    @property
    def label(self) -> str:
        """How the journal names it: alice, or alice/lab for a named server."""
        return f"{self.user}/{self.name}" if self.name else self.user
