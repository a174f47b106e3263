"""Run the hub: bind, reconcile, tell systemd we are ready, serve until SIGTERM."""

import asyncio
import logging
import signal
import ssl

from aiohttp import web

from appliance.app import build_app
from appliance.config import Config
from appliance.notify import Notifier

log = logging.getLogger(__name__)


def status_line(app: web.Application) -> str:
    """What `systemctl status notebook-appliance` shows."""
    spawner = app["spawner"]
    running = len(spawner.running())
    pending = sum(1 for s in spawner.servers.values() if s.pending)
    return f"{running} servers running, {pending} pending"


def ssl_context(cfg: Config) -> ssl.SSLContext | None:
    """TLS from hub.ssl_cert/ssl_key, or None for plain HTTP."""
    if cfg.hub.ssl_cert is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cfg.hub.ssl_cert, cfg.hub.ssl_key)
    return ctx


async def serve(cfg: Config) -> None:
    """Start everything (READY=1 only once bound and reconciled), run until a signal."""
    notifier = Notifier()
    app = build_app(cfg)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, cfg.hub.listen, cfg.hub.port, ssl_context=ssl_context(cfg),
                       reuse_address=True)
    await site.start()
    log.info("hub listening on %s:%s", cfg.hub.listen, cfg.hub.port)
    notifier.ready(status_line(app))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watchdog = asyncio.create_task(notifier.watchdog(lambda: status_line(app)))
    await stop.wait()
    notifier.stopping()
    watchdog.cancel()
    await runner.cleanup()
    log.info("hub stopped; user servers keep running in their own units")
