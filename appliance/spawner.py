"""Each user's notebook server: start, watch, stop and adopt it as a transient systemd unit.

Lifecycle only. Who starts next is spawnqueue.py; the record and its states userserver.py; the
progress feed progress.py; the private directory and token rundir.py; the unit's shape
units.py; the bus systemd.py. A server is ready when it answers HTTP on its socket
(upstream.probe), not when the unit turns active.
"""

import asyncio
import logging
import signal
import time
from functools import partial

from appliance import capacity, cgroups, hubenv, oauth, profiles, rundir, units
from appliance.auth import MAX_UNIT_NAME
from appliance.config import Config, format_size
from appliance.errors import BadRequest, Conflict, SpawnError, SystemdError
from appliance.events import Cause, Event, Events, Kind
from appliance.profiles import Profile
from appliance.spawnqueue import SpawnQueue
from appliance.store import SERVER_TOKEN_NOTE, Store
from appliance.systemd import SERVICE, Systemd
from appliance.upstream import Upstream, probe
from appliance.userserver import Server, ServerState

log = logging.getLogger(__name__)

STOPPED, STARTING, RUNNING, STOPPING = (ServerState.STOPPED, ServerState.STARTING,
                                        ServerState.RUNNING, ServerState.STOPPING)
PROBE_INTERVAL = 0.02
ACTIVITY_SECONDS = 60.0


class Spawner:
    """All servers of the hub, keyed by (user, server name); "" is a user's default server."""

    def __init__(self, cfg: Config, systemd: Systemd, store: Store, secret: bytes,
                 profiles: tuple[Profile, ...], oauth_clients: oauth.Clients | None = None):
        self.cfg = cfg
        self.systemd = systemd
        self.store = store
        self.profiles = profiles
        self._secret = secret
        #: Each server is an OAuth client of the hub while it runs (oauth.py).
        self.oauth_clients = oauth_clients or oauth.Clients()
        #: Where servers reach the hub's API (JUPYTERHUB_API_URL); server.py sets it to
        #: the socket it bound.
        self.hub_url = hubenv.hub_url(cfg.hub.listen, cfg.hub.port,
                                      cfg.hub.ssl_cert is not None)
        self.servers: dict[tuple[str, str], Server] = {}
        self.queue = SpawnQueue(
            cfg.spawner.concurrent_spawns,
            partial(capacity.slice_memory, systemd, cfg.spawner.slice,
                    cfg.spawner.admission == "limits"),
            cooldown=cfg.spawner.restart_cooldown)
        self._tasks: list[asyncio.Task] = []
        self.events = Events()
        #: The servers' cgroup readings (cgroups.sample fills it; app.py runs that).
        self.sampler = cgroups.Sampler()
        #: Listen to every server's lifecycle (events.py).
        self.subscribe = self.events.subscribe
        systemd.on_reconnect(self.resync)

    def start_watching(self) -> None:
        """Begin saving running servers' activity."""
        self._tasks = [asyncio.create_task(self._save_activity(), name="activity")]

    async def _save_activity(self) -> None:
        """Every ACTIVITY_SECONDS, write the running servers' last activity to the store."""
        while True:
            await asyncio.sleep(ACTIVITY_SECONDS)
            await self.save_activity()

    async def save_activity(self) -> None:
        """Write the running servers' last activity to the store (also as the hub stops: a
        restarted hub's culler must not take a server in use for one idle since the last
        round)."""
        for server in self.running():
            await self.store.save_server(server.record())
            if server.last_activity:
                await self.store.touch_user(server.user, server.last_activity)

    def oom_counted(self, server: Server, count: int) -> None:
        """A new oom_kill reading: a rise means a process (usually a kernel) was killed."""
        if server.oom_kills >= 0 and count > server.oom_kills:
            server.notice = (f"A process in your server (usually a notebook kernel) was "
                             f"stopped because it used more than your "
                             f"{format_size(self._profile(server).memory)} memory limit. "
                             "Restart the kernel and work with less data at once.")
            log.warning("user=%r OOM killer ended a process in %s (oom_kill=%d)",
                        server.label, server.unit, count)
            self.events.emit(Event(Kind.OOM, server, Cause.OOM, server.notice))
        server.oom_kills = count

    def get(self, user: str, name: str = "") -> Server:
        """A user's server object (stopped if never started)."""
        key = (user, name)
        if key not in self.servers:
            paths = units.ServerPaths.for_user(self.cfg.hub.runtime_dir, user, name)
            self.servers[key] = Server(user, name, units.unit_name(user, name), paths,
                                       units.base_url(user, name))
        return self.servers[key]

    def find(self, user: str, name: str = "") -> Server | None:
        """A server the hub knows, or None (never creates one)."""
        return self.servers.get((user, name))

    def of_user(self, user: str) -> list[Server]:
        """Every server of a user (the default one and named ones) the hub knows."""
        return [s for s in self.servers.values() if s.user == user]

    def named(self, user: str) -> list[Server]:
        """The user's named servers, by name."""
        return sorted((s for (u, n), s in self.servers.items() if u == user and n),
                      key=lambda s: s.name)

    def running(self) -> list[Server]:
        """Servers that are ready."""
        return [s for s in self.servers.values() if s.ready]

    def _profile(self, server: Server) -> Profile:
        """The server's profile; one from the config for a server never started here."""
        return server.profile or profiles.default(self.profiles)

    # -- start -------------------------------------------------------------------------------

    async def start(self, owner: units.Owner, profile: Profile | None = None,
                    name: str = "") -> Server:
        """Begin starting one of the owner's servers in the background with profile (the
        configured default when None: the caller has checked who may use which).

        Conflict if it is not stopped; BadRequest past spawner.named_servers_limit.
        """
        if name:
            self._check_named_limit(owner.name, name)
        server = self.get(owner.name, name)
        if server.state != STOPPED:
            raise Conflict(f"{server.label}'s server is already {server.state}",
                           user_message=f"Your server is already {server.state}.")
        server.profile = profile or profiles.default(self.profiles)
        server.message, server.notice, server.oom_kills, server.exited = "", "", 0, False
        server.started = time.time()
        server.token = self._server_token(server)
        server.unit_started = False
        server.progress.restart()
        server.progress.emit(0, "Server requested")
        # The task exists before the first await, so a stop arriving meanwhile cancels it.
        server.task = asyncio.create_task(self._spawn(server, owner),
                                          name=f"spawn-{server.label}")
        await self.set_state(server, STARTING)  # a restarted hub must know of it
        return server

    def _check_named_limit(self, user: str, name: str) -> None:
        """Named servers are off at limit 0 (off by default, as JupyterHub's
        allow_named_servers); else a user has at most limit of them, running or not, as
        JupyterHub's named_server_limit_per_user counts (400 as JupyterHub answers)."""
        limit = self.cfg.spawner.named_servers_limit
        if limit == 0:
            raise BadRequest("named servers are off (spawner.named_servers_limit = 0)",
                             user_message="Named servers are not enabled.")
        others = [s for s in self.named(user) if s.name != name]
        if len(others) >= limit:
            raise BadRequest(f"{user} already has {len(others)} named servers",
                             user_message=f"You may have at most {limit} named servers; "
                                          "remove one first.")
        if len(units.unit_name(user, name)) > MAX_UNIT_NAME:
            raise BadRequest(f"unit name for {user}'s server {name!r} is too long",
                             user_message=f"{name!r} is too long a name for your servers; "
                                          "choose a shorter one.")

    async def wait_ready(self, server: Server, timeout: float) -> bool:
        """Wait up to timeout for a pending spawn; True if the server is ready."""
        if server.task is not None:
            await asyncio.wait({server.task}, timeout=timeout)
        return server.ready

    async def _spawn(self, server: Server, owner: units.Owner) -> None:
        """Wait for a turn in the queue, launch, wait until Jupyter answers."""
        try:
            await self.queue.enter(server.unit, self._profile(server).memory,
                                   partial(self._tell_place, server))
        except SpawnError as e:
            await self._spawn_failed(server, e)
            return
        began = time.monotonic()
        try:
            await self._launch_and_answer(server, owner)
        finally:
            self.queue.launched(server.unit, time.monotonic() - began)

    def _tell_place(self, server: Server, position: int, words: str) -> None:
        """The queue's word on a waiting start, as a progress event."""
        server.progress.emit(5, words, queue_position=position)

    async def _launch_and_answer(self, server: Server, owner: units.Owner) -> None:
        """The spawn itself; any failure stops the unit and is told to the user."""
        timeout = self.cfg.spawner.start_timeout
        try:
            await asyncio.wait_for(self._launch(server, owner), timeout)
        except asyncio.TimeoutError:  # a stuck call must not leave the spawn pending
            await self._spawn_failed(server, SpawnError(
                f"systemd did not start the server within {timeout:.0f} seconds"))
            return
        except (SpawnError, SystemdError, OSError) as e:
            await self._spawn_failed(server, e)
            return
        await self._finish_spawn(server)

    async def _finish_spawn(self, server: Server) -> None:
        """Wait until the launched server answers, then mark it ready (or failed)."""
        try:
            await self._wait_answering(server)
            server.cgroup = await self.systemd.unit_property(server.unit, SERVICE,
                                                             "ControlGroup")
        except (SpawnError, SystemdError, OSError, asyncio.TimeoutError) as e:
            await self._spawn_failed(server, e)
            return
        server.upstream = self._upstream(server)
        server.last_activity = time.time()
        await self.set_state(server, RUNNING)
        log.info("user=%r server ready in %.2fs (%s)", server.label,
                 time.time() - server.started, server.unit)
        server.progress.emit(100, f"Server ready at {server.url}", ready=True, url=server.url)

    async def _launch(self, server: Server, owner: units.Owner) -> None:
        """Prepare the private directory, then StartTransientUnit."""
        await self._in_thread_to_the_end(rundir.prepare_directory, server.paths, owner.uid,
                                         owner.gid, server.token)
        await self._grant(server)
        server.hub_oauth = hubenv.speaks_hub_oauth(self._profile(server).command)
        props = units.unit_properties(self.cfg, self._profile(server), owner, server.paths,
                                      server.url, self.hub_url, server.name)
        server.progress.emit(20, "Starting the server as a systemd unit")
        await self.systemd.reset_failed(server.unit)
        self.systemd.watch(server.unit, self._on_unit_change)
        await self.systemd.start_transient(server.unit, props)
        server.unit_started = True
        server.progress.emit(50, "Server process running, waiting for Jupyter to answer")
        log.info("user=%r started %s (profile %s)", server.label, server.unit,
                 self._profile(server).name)

    async def _wait_answering(self, server: Server) -> None:
        """Poll the socket until Jupyter answers HTTP; fail if the unit dies meanwhile."""
        deadline = time.monotonic() + self.cfg.spawner.start_timeout
        while not await self._answers(server):
            if server.exited:
                raise SpawnError(server.message or "the server stopped while starting")
            if time.monotonic() > deadline:
                raise SpawnError(f"the server did not answer within "
                                 f"{self.cfg.spawner.start_timeout:.0f} seconds")
            await asyncio.sleep(PROBE_INTERVAL)

    async def _spawn_failed(self, server: Server, error: Exception) -> None:
        """Stop what was started, record why, and tell whoever watches the progress."""
        reason = server.message or getattr(error, "user_message", "") or str(error)
        log.warning("user=%r spawn failed: %s (see journalctl -u %s)",
                    server.label, error, server.unit)
        await self._teardown_logged(server)
        server.message = reason
        await self.set_state(server, STOPPED, Cause.FAILED)
        server.progress.emit(100, f"Spawn failed: {reason}", failed=True)

    # -- stop --------------------------------------------------------------------------------

    async def stop(self, user: str, name: str = "", reason: str = "",
                   cause: Cause = Cause.USER) -> Server:
        """Stop one of the user's servers and wait for it; Conflict if it is not running.
        A reason is kept as the server's message (the home page shows it); the cause goes
        to the listeners."""
        server = self.get(user, name)
        if server.state == STARTING and server.task is not None:
            server.task.cancel()
            server.progress.emit(100, "Spawn cancelled: the server was stopped.", failed=True)
        elif server.state != RUNNING:
            raise Conflict(f"{server.label}'s server is not running",
                           user_message="Your server is not running.")
        await self.set_state(server, STOPPING)
        server.progress.close()
        await self._teardown_logged(server)
        server.message = reason
        await self.set_state(server, STOPPED, cause)
        log.info("user=%r server stopped%s", server.label, f": {reason}" if reason else "")
        return server

    async def remove(self, user: str, name: str) -> None:
        """Forget a stopped named server (JupyterHub's DELETE with "remove": true)."""
        server = self.find(user, name)
        if server is None or not name:
            return
        if server.state != STOPPED:
            raise Conflict(f"{server.label} is {server.state}",
                           user_message="Stop the server before removing it.")
        del self.servers[server.key]
        await self.store.delete_server(user, name)
        log.info("user=%r named server removed", server.label)

    async def _teardown_logged(self, server: Server) -> None:
        """_teardown, whose failure is logged, never left to strand the server mid-way: the
        caller marks it stopped either way (systemd may still hold the unit; the next start
        resets it)."""
        try:
            await self._teardown(server)
        except Exception:
            log.exception("user=%r could not stop %s cleanly; marking it stopped (see "
                          "journalctl -u %s)", server.label, server.unit, server.unit)

    async def _teardown(self, server: Server) -> None:
        """Last readings, StopUnit, close the relay, remove the private directory, free its
        memory."""
        await self._last_reading(server)
        try:
            await self.systemd.stop(server.unit)
            await self.systemd.reset_failed(server.unit)
        finally:
            # The token and OAuth client first: nothing below may leave them working.
            await self._revoke(server)
            self.systemd.unwatch(server.unit)
            self.queue.stopped(server.unit)
            if server.upstream is not None:
                await server.upstream.close()
                server.upstream = None
            await self._in_thread(rundir.remove_directory, server.paths)

    async def _last_reading(self, server: Server) -> None:
        """The cgroup's counters just before the unit goes away (usage history keeps them);
        the sampler's latest when the unit is already gone."""
        reading = await self._in_thread(cgroups.read, server.cgroup) if server.cgroup else None
        if reading is None or reading.cpu_usec is None:
            reading = self.sampler.latest.get(server.unit)
        server.last_reading = reading

    # -- exits noticed from systemd's signals -------------------------------------------------

    def _on_unit_change(self, unit: str, changes: dict) -> None:
        """PropertiesChanged: a unit that fails or goes inactive on its own is reported."""
        server = next((s for s in self.servers.values() if s.unit == unit), None)
        if server is None or changes.get("ActiveState") not in ("failed", "inactive"):
            return
        if server.exit_task is not None and not server.exit_task.done():
            return  # one inquiry at a time; later signals describe the same exit
        if server.state in (STARTING, RUNNING):
            server.exit_task = asyncio.create_task(self._on_exit(server))

    async def _on_exit(self, server: Server) -> None:
        """Find out why the unit ended and mark the server stopped with a plain reason."""
        if server.state not in (STARTING, RUNNING):
            return
        started = server.started
        state = await self.systemd.state(server.unit)
        if state.running:
            return  # the 'inactive' of a unit just being created, before it activates
        final = (await self._in_thread(cgroups.read, server.cgroup)).oom_kills \
            if server.cgroup else None
        if server.started != started or server.state not in (STARTING, RUNNING):
            return  # stopped and started again meanwhile: this exit was the old one's
        oom = server.oom_kills > 0 or bool(final)
        reason = exit_reason(state.result, state.exec_main_status,
                             self._profile(server).memory, oom)
        log.warning("user=%r %s ended (result=%s status=%s); see journalctl -u %s",
                    server.label, server.unit, state.result, state.exec_main_status, server.unit)
        server.message = reason
        if server.state == RUNNING:
            await self._teardown_logged(server)
            await self.set_state(server, STOPPED, Cause.OOM if oom else Cause.CRASH)
        else:
            server.exited = True  # _wait_answering gives up with server.message

    # -- adopt after a hub restart or a lost D-Bus connection ---------------------------------

    async def reconcile(self) -> None:
        """Adopt servers whose units still run; mark the others stopped."""
        for rec in await self.store.servers():
            if rec.state == STOPPED:
                continue
            server = self.get(rec.user, rec.name)
            server.profile = profiles.named(self.profiles, rec.profile)
            server.started, server.last_activity = rec.started, rec.last_activity
            server.token = self._server_token(server)
            await self._adopt(server)

    async def _adopt(self, server: Server) -> None:
        """Adopt one recorded server if systemd still runs it and it answers."""
        state = await self.systemd.state(server.unit)
        self.systemd.watch(server.unit, self._on_unit_change)
        if state.running:
            self.queue.reserve(server.unit, self._profile(server).memory)
            await self._grant(server)
            server.hub_oauth = units.started_with_hub_oauth(
                await self.systemd.unit_property(server.unit, SERVICE, "Environment"))
        if state.running and await self._answers(server):
            server.upstream = self._upstream(server)
            server.cgroup = await self.systemd.unit_property(server.unit, SERVICE, "ControlGroup")
            server.oom_kills = -1
            await self.set_state(server, RUNNING)
            log.info("user=%r adopted running %s", server.label, server.unit)
            return
        if state.running:
            # The hub went down mid-spawn: the unit runs but Jupyter is not up yet.
            log.info("user=%r adopting %s, still starting", server.label, server.unit)
            await self.set_state(server, STARTING)
            server.progress.restart()
            server.progress.emit(50, "Server process running, waiting for Jupyter to answer")
            server.task = asyncio.create_task(self._finish_spawn(server))
            return
        log.info("user=%r %s is gone (%s); marked stopped", server.label, server.unit,
                 state.active_state)
        await self._teardown_logged(server)
        server.message = "Your server stopped while the hub was restarting."
        await self.set_state(server, STOPPED, Cause.HUB)

    async def resync(self) -> None:
        """After a D-Bus reconnection: a server whose unit ended unheard is marked stopped
        (running ones, and starting ones whose unit was already started)."""
        launched = [s for s in self.servers.values()
                    if s.state == RUNNING or (s.state == STARTING and s.unit_started)]
        for server in launched:
            state = await self.systemd.state(server.unit)
            if not state.running:
                log.warning("user=%r %s ended while the D-Bus connection was down",
                            server.label, server.unit)
                self._on_unit_change(server.unit, {"ActiveState": state.active_state})

    async def close(self) -> None:
        """Hub shutdown: servers keep running in their own units; only relays are closed,
        and what they saw of the servers' activity is kept."""
        for task in self._tasks:
            task.cancel()
        try:
            await self.save_activity()
        except Exception:  # the store gone already: the last round's figures stay
            log.exception("could not save the servers' activity at shutdown")
        self.queue.close()
        for server in self.servers.values():
            for task in (server.task, server.exit_task):
                if task is not None and not task.done():
                    task.cancel()
            if server.upstream is not None:
                await server.upstream.close()

    # -- helpers -----------------------------------------------------------------------------

    async def _grant(self, server: Server) -> None:
        """What a server needs from the hub as JupyterHub gives it: its token as an API
        token with the `server` role's scopes, and its OAuth client, whose secret that
        token is (JupyterHub's User.spawn)."""
        description = f"{SERVER_TOKEN_NOTE}{server.url}"
        await self.store.ensure_token(server.user, server.token, description,
                                      hubenv.server_token_scopes(server.user, server.name,
                                                                 self._server_role()))
        self.oauth_clients.register_client(
            hubenv.server_client_id(server.user, server.name), server.token,
            server.url + "oauth_callback", description, server=(server.user, server.name))

    def _server_role(self) -> tuple[str, ...]:
        """The `server` role's scopes: [roles.server]'s, else JupyterHub's."""
        role = dict(self.cfg.roles).get("server")
        return role.scopes if role is not None else hubenv.DEFAULT_ROLES["server"]

    async def _revoke(self, server: Server) -> None:
        """A stopped server's token and OAuth client are gone."""
        self.oauth_clients.unregister(hubenv.server_client_id(server.user, server.name))
        if server.token:
            await self.store.delete_token(server.token)

    async def _answers(self, server: Server) -> bool:
        """Whether Jupyter answers on the server's socket. jupyterhub-singleuser is asked
        without the token: it would check it with the hub, which may not listen yet (a
        restart adopting servers before it binds its socket)."""
        return await probe(server.paths.socket, server.url + "api",
                           None if server.hub_oauth else server.token)

    def _upstream(self, server: Server) -> Upstream:
        """The relay to a ready server; jupyterhub-singleuser gets the browser's own
        Authorization (it logs browsers in itself), any other server the hub's token."""
        return Upstream(str(server.paths.socket), server.token, self.cfg.proxy,
                        relay_authorization=server.hub_oauth)

    def _server_token(self, server: Server) -> str:
        """The server's token (rundir.server_token: a restarted hub derives it again)."""
        return rundir.server_token(self._secret, server.unit, server.started)

    async def set_state(self, server: Server, state: ServerState,
                        cause: Cause | None = None) -> None:
        """The one place a server's state changes: set it, persist it, tell the listeners
        (started, ready, or stopped with its cause and the reason its user reads)."""
        server.state = state
        await self.store.save_server(server.record())
        kind = {STARTING: Kind.STARTED, RUNNING: Kind.READY, STOPPED: Kind.STOPPED}.get(state)
        if kind is not None:
            self.events.emit(Event(kind, server, cause, server.message))

    @staticmethod
    async def _in_thread(fn, *args):
        """Run blocking file work off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    @classmethod
    async def _in_thread_to_the_end(cls, fn, *args):
        """_in_thread, but a cancellation waits until the thread's work is over: a cancelled
        spawn's teardown must not race the directory it is still writing."""
        work = asyncio.ensure_future(cls._in_thread(fn, *args))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            await asyncio.gather(work, return_exceptions=True)
            raise


def exit_reason(result: str, status: int, memory: int, oom: bool = False) -> str:
    """Say in words why a unit ended (systemd.exec(5) Result= values)."""
    if result == "oom-kill" or (oom and result == "signal" and status == signal.SIGKILL):
        return (f"Your server was stopped: it used more than its {format_size(memory)} "
                "memory limit.")
    if result == "exit-code":
        return f"Your server exited with status {status}."
    if result in ("signal", "core-dump"):
        return f"Your server was killed by signal {status}."
    if result == "timeout":
        return "Your server did not start or stop in time and was stopped."
    if result == "resources":
        return "Your server could not be started (missing program or home directory)."
    return "Your server stopped."
