"""Run the hub: bind (or take systemd's sockets), reconcile, say READY=1, serve until SIGTERM."""

import asyncio
import logging
import os
import signal
import socket
import ssl

from aiohttp import web

from appliance.app import build_app
from appliance.config import Config
from appliance.notify import Notifier
from appliance.tls import server_context

log = logging.getLogger(__name__)

#: sd_listen_fds(3): passed sockets start at this descriptor.
SD_LISTEN_FDS_START = 3


#: How often STATUS= is refreshed for `systemctl status`.
STATUS_EVERY = 10.0
#: On stop, after the listener closes: requests on connections accepted just before get this
#: long to arrive, before aiohttp closes connections that have not sent one yet.
ACCEPT_GRACE = 1.0
#: How long open requests may go on after a stop (within the unit's TimeoutStopSec=30s).
SHUTDOWN_TIMEOUT = 20.0


async def status_line(app: web.Application) -> str:
    """What `systemctl status notebook-appliance` shows."""
    spawner = app["spawner"]
    running = len(spawner.running())
    pending = sum(1 for s in spawner.servers.values() if s.pending)
    users = await app["store"].logged_in_users()
    return f"{users} users logged in, {running} servers running, {pending} pending"


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


async def start_sites(runner: web.AppRunner, cfg: Config, tls: ssl.SSLContext | None) -> None:
    """Serve on systemd's sockets when socket-activated, else bind hub.listen:hub.port."""
    sockets = activated_sockets()
    for sock in sockets:
        await web.SockSite(runner, sock, ssl_context=tls,
                           shutdown_timeout=SHUTDOWN_TIMEOUT).start()
        log.info("hub serving on socket-activated %s", sock.getsockname())
    if not sockets:
        await web.TCPSite(runner, cfg.hub.listen, cfg.hub.port, ssl_context=tls,
                          reuse_address=True, shutdown_timeout=SHUTDOWN_TIMEOUT).start()
        log.info("hub listening on %s:%s", cfg.hub.listen, cfg.hub.port)


async def start_redirect(cfg: Config) -> web.AppRunner | None:
    """With TLS and hub.redirect_port: a plain-HTTP listener that sends browsers to HTTPS."""
    if cfg.hub.ssl_cert is None or not cfg.hub.redirect_port:
        return None

    async def to_https(request: web.Request) -> web.Response:
        # The same host the browser asked for (IPv6 bracketed by yarl), the TLS port, and the
        # path and query exactly as sent.
        origin = request.url.origin().with_scheme("https").with_port(
            None if cfg.hub.port == 443 else cfg.hub.port)
        path = request.raw_path if request.raw_path.startswith("/") else "/"
        raise web.HTTPMovedPermanently(f"{origin}{path}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", to_https)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, cfg.hub.listen, cfg.hub.redirect_port,
                      reuse_address=True).start()
    return runner


async def let_accepted_requests_arrive(app: web.Application) -> None:
    """Shutdown step between closing the listener and closing idle connections.

    A client that connected just before a restart has sent, or is about to send, its request
    on a connection this hub already accepted; without the pause aiohttp would close that
    connection unanswered. Connections not yet accepted stay queued on systemd's socket for
    the next hub.
    """
    await asyncio.sleep(ACCEPT_GRACE)


async def serve(cfg: Config) -> None:
    """Start everything (READY=1 only once bound and reconciled), run until a signal."""
    notifier = Notifier()
    tls = server_context(cfg)  # a bad certificate stops the hub before it touches anything
    app = build_app(cfg)
    app.on_shutdown.append(let_accepted_requests_arrive)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()  # runs the cleanup contexts: store, systemd, reconcile
    await start_sites(runner, cfg, tls)
    redirect = await start_redirect(cfg)
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
    if redirect is not None:
        await redirect.cleanup()
    await runner.cleanup()
    log.info("hub stopped; user servers keep running in their own units")
