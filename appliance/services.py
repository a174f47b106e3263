"""JupyterHub services ([services.*]): their tokens, their units, and how to reach them.

A managed service (one with a command) runs as a transient unit in its own slice, started
when the hub starts, left running (adopted) when the hub restarts and its configuration is
unchanged, restarted when its configuration changed, stopped when it is taken out of the
config. Each start gets a fresh token: only its hash is in the store, the token itself in a
0400 root file that systemd hands to the unit as a credential. An external service's token
comes from the config. A service with `oauth` is the hub's OAuth client `service-<name>`
(its token the client's secret), as in JupyterHub, so its users log in with HubOAuth. How the
units look is serviceunits.py's.
"""

import asyncio
import logging
import os
import time
from pathlib import Path

from appliance import hubenv, serviceunits
from appliance.config import Config, ProxyConfig, ServiceConfig
from appliance.errors import SystemdError, UpstreamError
from appliance.oauth import Clients
from appliance.store import Store, new_secret
from appliance.systemd import SERVICE, UNIT, Systemd
from appliance.upstream import Upstream

log = logging.getLogger(__name__)

#: Tries (0.2 s apart) to start a unit whose stopped predecessor is still loaded.
UNIT_EXISTS_TRIES = 25
#: How long a managed service's port is known to be its own (seconds): checked again after.
LISTENER_CHECKED_FOR = 2.0
#: The kernel's tables of TCP sockets (proc(5)); LISTEN is state 0A.
PROC_NET_TCP = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


class Services:
    """The configured services of one hub."""

    def __init__(self, cfg: Config, systemd: Systemd, store: Store, oauth_clients: Clients):
        self.cfg = cfg
        self.systemd = systemd
        self.store = store
        self.oauth_clients = oauth_clients
        self.configured: dict[str, ServiceConfig] = dict(cfg.services)
        self.token_dir = cfg.hub.runtime_dir / "services"
        self._upstreams: dict[str, Upstream] = {}
        #: name -> until when its port was seen held by the service alone (monotonic).
        self._listener_ok: dict[str, float] = {}

    def managed(self) -> dict[str, ServiceConfig]:
        """The services the hub runs (those with a command)."""
        return {name: s for name, s in self.configured.items() if s.command}

    async def sync_tokens(self) -> None:
        """The store holds a token for every external service (the config's) and none for a
        service no longer configured."""
        dropped = await self.store.forget_services(list(self.configured))
        if dropped:
            log.info("removed %d token(s) of services no longer in the config", dropped)
        for name, service in self.configured.items():
            if service.api_token and not service.command:
                await self.store.replace_service_token(name, service.api_token,
                                                       "api_token from the config")
                self._register_client(name, service, service.api_token)

    async def start_all(self, api_url: str) -> None:
        """Stop the units of services taken out of the config, then start (or adopt) every
        managed one. A service that fails to start is logged and left; the hub goes on."""
        wanted = {serviceunits.unit_name(name) for name in self.managed()}
        for unit in await self.systemd.list_units(f"{serviceunits.UNIT_PREFIX}*.service"):
            if unit not in wanted:
                log.info("stopping %s: its service is no longer in the config", unit)
                await self._stop_unit(unit)
        for name, service in self.managed().items():
            try:
                await self.ensure_running(name, service, api_url)
            except (SystemdError, OSError) as e:
                log.error("service=%s could not be started: %s (see journalctl -u %s)", name,
                          e, serviceunits.unit_name(name))

    async def ensure_running(self, name: str, service: ServiceConfig, api_url: str) -> None:
        """Adopt the service's unit if it runs with this configuration and its token is
        known; otherwise (re)start it with a fresh token."""
        unit = serviceunits.unit_name(name)
        props = serviceunits.properties(name, service, api_url, self.token_file(name))
        loop = asyncio.get_running_loop()
        state = await self.systemd.state(unit)
        if state.running:
            described = await self.systemd.unit_property(unit, UNIT, "Description")
            token = await loop.run_in_executor(None, read_token, self.token_file(name))
            if (described == props[0][2] and token
                    and await self.store.service_token(name, token)):
                self._register_client(name, service, token)
                log.info("service=%s adopted its running unit %s", name, unit)
                return
            log.info("service=%s restarting %s: its configuration changed", name, unit)
            await self.systemd.stop(unit)
        token = service.api_token or new_secret()
        await loop.run_in_executor(None, write_token, self.token_file(name), token)
        await self.store.replace_service_token(name, token, "managed service, made at start")
        self._register_client(name, service, token)
        await self._start(unit, props)
        log.info("service=%s started as %s", name, unit)

    def _register_client(self, name: str, service: ServiceConfig, token: str) -> None:
        """With `oauth`, the service is the OAuth client JupyterHub makes of it: its id and
        redirect URI are those in its environment (serviceunits.py), its secret its token."""
        if service.oauth:
            self.oauth_clients.register_client(
                hubenv.service_client_id(name), token,
                serviceunits.prefix(name) + "oauth_callback", f"Service {name}", service=name)

    async def _start(self, unit: str, props: list) -> None:
        """StartTransientUnit; a unit just stopped may still be loaded for a moment (its
        name taken: UnitExists), so that is waited out."""
        for attempt in range(UNIT_EXISTS_TRIES):
            await self.systemd.reset_failed(unit)
            try:
                await self.systemd.start_transient(unit, props)
                return
            except SystemdError as e:
                if not e.dbus_name.endswith(".UnitExists") or attempt + 1 == UNIT_EXISTS_TRIES:
                    raise
            await asyncio.sleep(0.2)

    async def stop_all(self) -> None:
        """Stop every managed service's unit (the tests' clean-up; the hub itself leaves
        them running when it stops, and the package's prerm stops their slice)."""
        for name in self.managed():
            await self._stop_unit(serviceunits.unit_name(name))

    async def _stop_unit(self, unit: str) -> None:
        """Stop a service's unit and remove its token file."""
        await self.systemd.stop(unit)
        await self.systemd.reset_failed(unit)
        name = unit[len(serviceunits.UNIT_PREFIX):-len(".service")]
        self.token_file(name).unlink(missing_ok=True)

    def token_file(self, name: str) -> Path:
        """<runtime_dir>/services/<name>.token: the credential systemd loads at each start."""
        return self.token_dir / f"{name}.token"

    async def main_pid(self, name: str) -> int:
        """The service's main process id (JupyterHub's model `pid`); 0 when not running."""
        if name not in self.managed():
            return 0
        try:
            return int(await self.systemd.unit_property(serviceunits.unit_name(name), SERVICE,
                                                        "MainPID"))
        except SystemdError:
            return 0

    def upstream(self, name: str, proxy: ProxyConfig) -> Upstream | None:
        """Where the proxy reaches the service's url (None: it has none), pooled."""
        service = self.configured.get(name)
        if service is None or not service.url:
            return None
        if name not in self._upstreams:
            self._upstreams[name] = service_upstream(name, service.url, proxy)
        return self._upstreams[name]

    async def check_listener(self, name: str) -> None:
        """UpstreamError unless every socket listening on a managed service's loopback port
        is the service's own (its unit's account). While a service is down (a restart, a
        crash) anyone on the machine may bind its port: the hub would relay everyone's
        requests, and their Authorization, to that process on the hub's origin. A service
        listening holds the port (another account cannot share it, SO_REUSEPORT needs the
        same uid), so a check every LISTENER_CHECKED_FOR seconds closes the gap. An external
        service's port is its sysadmin's to guard; a UNIX socket lives in its own directory."""
        service = self.configured.get(name)
        address = serviceunits.tcp_address(service.url) if service is not None else None
        if address is None or not service.command:
            return
        if self._listener_ok.get(name, 0) > time.monotonic():
            return
        loop = asyncio.get_running_loop()
        port = address[1]
        # Not running (between a crash and its restart): whoever listens is someone else.
        own, uids = await loop.run_in_executor(None, _owner_and_listeners,
                                               await self.main_pid(name), port)
        foreign = uids - {own}
        if foreign:
            self._listener_ok.pop(name, None)
            raise UpstreamError(
                f"service {name}: port {port} is held by uid {sorted(foreign)}, not by the "
                f"service's own ({own if own is not None else 'not running'}); not relaying",
                user_message=f"The {name} service is not available right now.")
        self._listener_ok[name] = time.monotonic() + LISTENER_CHECKED_FOR

    async def close(self) -> None:
        """Close the proxy's connections to the services (their units keep running)."""
        for upstream in self._upstreams.values():
            await upstream.close()


def service_upstream(name: str, url: str, proxy: ProxyConfig) -> Upstream:
    """An Upstream for a service's url: its UNIX socket, or its loopback port. The client's
    own Authorization goes through (token None): the service authenticates its users."""
    label = f"service {name}"
    if url.startswith("unix:"):
        return Upstream(url[len("unix:"):], None, proxy, label=label)
    return Upstream("", None, proxy, tcp=serviceunits.tcp_address(url), label=label)


def _owner_and_listeners(pid: int, port: int) -> tuple[int | None, set[int]]:
    """The uid of process pid (None: 0 or gone), and the uids of every TCP socket listening
    on port."""
    try:
        own = os.stat(f"/proc/{pid}").st_uid if pid else None
    except OSError:
        own = None
    uids: set[int] = set()
    for table in PROC_NET_TCP:
        try:
            uids |= listening_uids(table.read_text(), port)
        except OSError:
            pass  # no IPv6
    return own, uids


def listening_uids(table: str, port: int) -> set[int]:
    """The uids owning the sockets that listen on port, from /proc/net/tcp{,6}'s text
    ("sl local_address rem_address st ... uid ...": the address as hex, the port last)."""
    uids = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 7 and fields[3] == "0A" and \
                int(fields[1].rpartition(":")[2], 16) == port:
            uids.add(int(fields[7]))
    return uids


def read_token(path: Path) -> str:
    """A running service's token from its file ("" when there is none: it is then restarted
    with a fresh one)."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def write_token(path: Path, token: str) -> None:
    """Write a token file, 0400 and root's, replacing any earlier one (never following a
    link); its directory is root's alone."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
    try:
        os.write(fd, token.encode())
    finally:
        os.close(fd)
