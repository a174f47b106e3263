"""The built-in idle culler: servers nobody uses are stopped, so 200 left running overnight do
not hold the machine's memory. Files are kept; the home page says why in words.

Idle means idle: every culler.every, each running server is asked itself (its /api/status
and /api/kernels over its socket): a kernel busy with a long computation counts as activity
now, and so does the server's own last_activity. The proxy's record counts too: a request
in flight (a kernel starting, an upload), the end of the last one, and every websocket message
either way (an open websocket alone is an idle tab, not use). A server idle for
culler.idle_timeout is stopped, and so is one older than culler.max_age when that is set.
"""

import asyncio
import logging
import time
from datetime import datetime

import aiohttp
from aiohttp import web

from appliance import periodic
from appliance.config import CullerConfig
from appliance.errors import Conflict
from appliance.events import Cause
from appliance.userserver import Server

log = logging.getLogger(__name__)


def idle_reason(seconds: float) -> str:
    """What the owner reads on the home page after an idle stop."""
    return (f"Your server was stopped after {_span(seconds)} without activity; your files "
            "are kept. Start it again when you need it.")


def age_reason(seconds: float) -> str:
    """What the owner reads after a stop at culler.max_age."""
    return (f"Your server was stopped because it had been running for {_span(seconds)}; "
            "your files are kept.")


def _span(seconds: float) -> str:
    """90 -> "2 minutes", 3600 -> "1 hour"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = round(seconds / size)
            return f"{n} {unit}" + ("" if n == 1 else "s")
    n = round(seconds)
    return f"{n} second" + ("" if n == 1 else "s")


def _timestamp(value: object) -> float | None:
    """Seconds since the epoch from Jupyter's ISO 8601 ("2026-12-03T20:15:31.123Z")."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


async def server_activity(server: Server) -> float | None:
    """When the server itself last saw activity; now if a kernel is busy; None if it
    cannot say (it does not answer: then only the proxy's record counts)."""
    upstream = server.upstream
    if upstream is None:
        return None
    try:
        status = await upstream.get_json(f"{server.url}api/status")
        # no_track_activity: the culler's own question must not count as activity.
        kernels = await upstream.get_json(f"{server.url}api/kernels?no_track_activity=1")
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
        log.info("user=%r culler could not ask the server: %s", server.label, e)
        return None
    if any(k.get("execution_state") == "busy" for k in kernels if isinstance(k, dict)):
        return time.time()
    times = [_timestamp(status.get("last_activity") if isinstance(status, dict) else None)]
    times += [_timestamp(k.get("last_activity")) for k in kernels if isinstance(k, dict)]
    known = [t for t in times if t is not None]
    return max(known) if known else None


def verdict(cfg: CullerConfig, server: Server, activity: float | None,
            now: float) -> str | None:
    """The reason to stop this server now, or None to keep it."""
    if server.user in cfg.users_exempt:
        return None
    if server.requests_in_flight:
        activity = now  # someone is waiting on it (a kernel starting, a download)
    last = max(t for t in (server.last_activity, activity, server.started, 0.0)
               if t is not None)
    if now - last >= cfg.idle_timeout:
        return idle_reason(cfg.idle_timeout)
    if cfg.max_age and server.started is not None and now - server.started >= cfg.max_age:
        return age_reason(cfg.max_age)
    return None


async def cull_round(app: web.Application) -> list[str]:
    """Check every running server once; the labels of those stopped."""
    cfg, spawner = app["config"].culler, app["spawner"]
    stopped = []
    for server in list(spawner.running()):
        if server.user in cfg.users_exempt:
            continue
        activity = await server_activity(server)
        if activity is not None and (server.last_activity or 0) < activity:
            server.last_activity = activity  # the home page and the admin page show it
        reason = verdict(cfg, server, activity, time.time())
        if reason is None or not server.ready:
            continue
        try:
            await spawner.stop(server.user, server.name, reason=reason, cause=Cause.CULLER)
        except Conflict:
            continue  # it stopped meanwhile
        log.info("user=%r culled: %s", server.label, reason)
        stopped.append(server.label)
    return stopped


def stops_at(cfg: CullerConfig, server: Server) -> float | None:
    """When the culler will stop this server if it stays idle (for the home page)."""
    if not cfg.enabled or server.user in cfg.users_exempt or not server.ready:
        return None
    last = max(t for t in (server.last_activity, server.started, 0.0) if t is not None)
    return last + cfg.idle_timeout


#: cleanup_ctx: the culler runs every culler.every while the hub does, when enabled.
culler_ctx = periodic.job("cull round", lambda app: app["config"].culler.every, cull_round,
                          enabled=lambda app: app["config"].culler.enabled)
