"""Run the hub: bind (or take systemd's sockets), reconcile, say READY=1, serve until SIGTERM."""

import asyncio
import gc
import logging
import os
import signal
import socket
import ssl
import weakref

from aiohttp import web

from appliance import hubenv, net
from appliance.app import build_app
from appliance.config import Config
from appliance.connections import ConnectionGuard
from appliance.notify import Notifier
from appliance.tls import server_context

log = logging.getLogger(__name__)

#: sd_listen_fds(3): passed sockets start at this descriptor.
SD_LISTEN_FDS_START = 3


#: listen(2) backlog: asyncio listens again on a socket it is given, with this (aiohttp's
#: SockSite passed 128, shrinking notebook-appliance.socket's Backlog=4096).
BACKLOG = 4096

#: How often STATUS= is refreshed for `systemctl status`.
STATUS_EVERY = 10.0
#: On stop, once the hub accepts no more: connections already accepted get up to this long to
#: send their request (a loaded VM can take seconds), before aiohttp closes the silent ones.
ACCEPT_GRACE = 5.0
#: How often the stop checks whether every accepted connection has been heard from.
DRAIN_POLL = 0.05
#: How long open requests may go on after a stop (within the unit's TimeoutStopSec=30s).
SHUTDOWN_TIMEOUT = 15.0


async def status_line(app: web.Application) -> str:
    """What `systemctl status notebook-appliance` shows."""
    spawner = app["spawner"]
    running = len(spawner.running())
    pending = sum(1 for s in spawner.servers.values() if s.pending)
    users = await app["store"].logged_in_users()
    line = (f"{counted(users, 'user')} logged in, {counted(running, 'server')} running, "
            f"{pending} pending")
    return line + (f" ({spawner.queue.waiting} in line)" if spawner.queue.waiting else "")


async def reachable_at(listeners: list[socket.socket], tls: bool) -> list[str]:
    """The hub's URLs on this machine's addresses, logged once for the sysadmin."""
    try:
        found = await asyncio.get_running_loop().run_in_executor(None, net.addresses)
    except OSError as e:  # no netlink (a sandbox): the admin page just leaves them out
        log.warning("cannot list the machine's addresses: %s", e)
        return []
    urls = net.urls(found, net.listening(listeners), tls)
    log.info("students open %s", ", ".join(urls) if urls else
             "the hub by this machine's name (it has no global address of its own)")
    return urls


def counted(n: int, noun: str) -> str:
    """1 user, 2 users."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


async def report_status(app: web.Application, notifier: Notifier) -> None:
    """Keep STATUS= current; a failed count is logged and tried again, never fatal."""
    while True:
        await asyncio.sleep(STATUS_EVERY)
        try:
            notifier.status(await status_line(app))
        except Exception:
            log.exception("could not update the status line")


def activated_sockets() -> list[socket.socket]:
    """Listening sockets passed by notebook-appliance.socket (sd_listen_fds(3)), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(os.environ.get("LISTEN_FDS", "0"))
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)  # not inherited by anything we might start
    return [socket.socket(fileno=fd) for fd in
            range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)]


def listening_sockets(cfg: Config) -> list[socket.socket]:
    """systemd's sockets when socket-activated, else one bound to hub.listen:hub.port."""
    sockets = activated_sockets()
    if sockets:
        for sock in sockets:
            log.info("hub serving on socket-activated %s", sock.getsockname())
        return sockets
    sock = bound_socket(cfg.hub.listen, cfg.hub.port)
    log.info("hub listening on %s:%s", cfg.hub.listen, cfg.hub.port)
    return [sock]


def servers_hub_url(listeners: list[socket.socket], tls: bool, default: str) -> str:
    """Where servers and services reach the hub (JUPYTERHUB_API_URL): the first TCP socket it
    listens on (a socket-activated port may differ from hub.port); default when there is none."""
    for sock in listeners:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            address, port = sock.getsockname()[:2]
            return hubenv.hub_url(address, port, tls)
    return default


def bound_socket(address: str, port: int) -> socket.socket:
    """A listening TCP socket on address:port (SO_REUSEADDR, as socket.create_server sets)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return socket.create_server((address, port), family=family, backlog=BACKLOG)


class GuardedSite(web.SockSite):
    """A SockSite whose connections pass the ConnectionGuard before aiohttp sees them."""

    def __init__(self, runner: web.AppRunner, sock: socket.socket, guard: ConnectionGuard,
                 tls: ssl.SSLContext | None) -> None:
        super().__init__(runner, sock, ssl_context=tls, shutdown_timeout=SHUTDOWN_TIMEOUT)
        self.runner, self.sock, self.guard, self.tls = runner, sock, guard, tls

    async def start(self) -> None:
        """SockSite.start (the same in aiohttp 3.8.4 and 3.11) with the guard's factory."""
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self.runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.guard.factory(server), sock=self.sock, ssl=self.tls, backlog=BACKLOG)


async def start_sites(runner: web.AppRunner, sockets: list[socket.socket],
                      tls: ssl.SSLContext | None, guard: ConnectionGuard) -> None:
    """Serve the app on each listening socket, through the guard."""
    for sock in sockets:
        await GuardedSite(runner, sock, guard, tls).start()


async def start_redirect(cfg: Config, guard: ConnectionGuard) -> web.AppRunner | None:
    """With TLS and hub.redirect_port: a plain-HTTP listener that sends browsers to HTTPS,
    behind the same guard (a client's connections to both ports count together)."""
    if cfg.hub.ssl_cert is None or not cfg.hub.redirect_port:
        return None

    async def to_https(request: web.Request) -> web.Response:
        # The same host the browser asked for (IPv6 bracketed by yarl), the TLS port, and the
        # path and query exactly as sent.
        origin = request.url.origin().with_scheme("https").with_port(
            None if cfg.hub.port == 443 else cfg.hub.port)
        path = request.raw_path if request.raw_path.startswith("/") else "/"
        raise web.HTTPMovedPermanently(f"{origin}{path}")

    app = web.Application(middlewares=[guard.middleware])
    app.router.add_route("*", "/{tail:.*}", to_https)
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           keepalive_timeout=cfg.hub.header_timeout)
    await runner.setup()
    await GuardedSite(runner, bound_socket(cfg.hub.listen, cfg.hub.redirect_port), guard,
                      None).start()
    return runner


class Drain:
    """Lets requests already on their way be answered when the hub stops.

    When the hub stops, it first stops accepting; connections not yet accepted stay queued on
    systemd's socket for the next hub. Connections accepted just before are finished first:
    asyncio's Server.close() drops one whose transport is not yet made (its accept task runs a
    loop turn later and finds the server closed), so the listeners leave the event loop without
    closing, and the stop waits a few turns. Then it waits (up to ACCEPT_GRACE) until each
    open connection has sent a request: aiohttp's shutdown closes every connection not in a
    request, so a silent one would be cut; one in its request is let finish, and one answered
    and idle in keep-alive is safe to close (clients retry those).
    """

    def __init__(self) -> None:
        self.listeners: list[socket.socket] = []
        self.runner: web.AppRunner | None = None
        self.heard_from: weakref.WeakSet = weakref.WeakSet()  # transports that sent a request

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        """Note the request's connection as heard from."""
        if request.transport is not None:
            self.heard_from.add(request.transport)
        return await handler(request)

    def waiting(self) -> int:
        """Open connections that have not sent (all of) a request yet."""
        if self.runner is None or self.runner.server is None:
            return 0
        return sum(1 for conn in self.runner.server.connections
                   if conn.transport is not None and conn.transport not in self.heard_from)

    async def stop_accepting(self) -> None:
        """Accept no more; give the connections already accepted their request's time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ACCEPT_GRACE
        # Connections made before the stop are taken first: a hub that bound its own socket
        # would reset them when it closes it (with systemd's socket, they would wait).
        await asyncio.sleep(DRAIN_POLL)
        for sock in self.listeners:
            loop.remove_reader(sock.fileno())
        await asyncio.sleep(DRAIN_POLL)  # accept tasks already queued make their transports
        while self.waiting() and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL)
        if self.waiting():
            log.info("stopping with %d connection(s) that sent no request", self.waiting())


async def serve(cfg: Config) -> None:
    """Start everything (READY=1 only once bound and reconciled), run until a signal."""
    notifier = Notifier()
    tls = server_context(cfg)  # a bad certificate stops the hub before it touches anything
    drain = Drain()
    guard = ConnectionGuard(cfg.hub.header_timeout, cfg.hub.max_connections_per_address)
    app = build_app(cfg, middlewares=[guard.middleware, drain.middleware])
    # keepalive_timeout: an answered connection that sends nothing more is closed after the
    # same time as a new one (aiohttp 3.8's default is 75 s, 3.11's an hour).
    runner = drain.runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                          keepalive_timeout=cfg.hub.header_timeout)
    await runner.setup()  # runs the cleanup contexts: store, systemd, reconcile
    # What start-up made (modules, config, routes, adopted servers) lives as long as the hub:
    # out of the collector's sight, a full collection no longer walks it. Measured during a
    # 150-student burst: full collections stalled the event loop for 77-590 ms before.
    gc.collect()
    gc.freeze()
    # Bound only now, as the hub is about to answer (a bound socket accepts connections).
    drain.listeners = listening_sockets(cfg)
    app["spawner"].hub_url = servers_hub_url(drain.listeners, tls is not None,
                                             app["spawner"].hub_url)
    await start_sites(runner, drain.listeners, tls, guard)
    app["urls"][:] = await reachable_at(drain.listeners, tls is not None)
    # Services are told where the hub's API is, so they start once it listens.
    await app["services"].start_all(app["spawner"].hub_url + "/hub/api")
    redirect = await start_redirect(cfg, guard)
    notifier.ready(await status_line(app))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    background = [asyncio.create_task(notifier.watchdog()),
                  asyncio.create_task(report_status(app, notifier))]
    await stop.wait()
    notifier.stopping()
    for task in background:
        task.cancel()
    await drain.stop_accepting()
    if redirect is not None:
        await redirect.cleanup()
    await runner.cleanup()
    log.info("hub stopped; user servers keep running in their own units")
