"""Who used what: every server session is kept when it ends (the "stats service" a
220-student course ran beside its hub, built in).

A listener on the lifecycle events (events.py): on each stop it writes user, server,
profile, started, stopped, the cause (user, culler, admin, OOM, crash, …), CPU seconds and
peak memory, read from the server's cgroup just before its unit went away. Per-user totals
and a CSV are made from those rows.
"""

import asyncio
import csv
import io
import logging
import time
from dataclasses import dataclass

from aiohttp import web

from appliance.events import Event, Kind
from appliance.store import Store, UsageRecord

log = logging.getLogger(__name__)


def record_of(event: Event) -> UsageRecord | None:
    """The usage row for a stop event, or None (not a stop, or it never started)."""
    server = event.server
    if event.kind != Kind.STOPPED or not getattr(server, "started", None):
        return None
    reading = server.last_reading
    cpu = reading.cpu_usec / 1e6 if reading is not None and reading.cpu_usec is not None \
        else None
    peak = None
    if reading is not None:
        peak = reading.peak if reading.peak is not None else reading.memory
    profile = server.profile.name if server.profile is not None else ""
    return UsageRecord(server.user, server.name, profile, server.started, event.at,
                       str(event.cause or "crash"), cpu, peak)


class UsageRecorder:
    """Writes a row for every stop; the writes run as tasks, awaited at shutdown."""

    def __init__(self, store: Store):
        self.store = store
        self._pending: set[asyncio.Task] = set()

    def __call__(self, event: Event) -> None:
        """Listener: a stop becomes a usage row."""
        rec = record_of(event)
        if rec is None:
            return
        task = asyncio.create_task(self._write(rec))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, rec: UsageRecord) -> None:
        try:
            await self.store.record_usage(rec)
        except Exception:
            log.exception("user=%r could not record usage", rec.user)

    async def drain(self) -> None:
        """Wait for rows still being written."""
        await asyncio.gather(*self._pending, return_exceptions=True)


@dataclass
class Totals:
    """One user's use over a period."""

    user: str
    sessions: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_memory: int = 0


def totals(rows: list[UsageRecord], since: float, until: float) -> list[Totals]:
    """Per-user totals of the sessions' time inside [since, until), by user name."""
    by_user: dict[str, Totals] = {}
    for r in rows:
        t = by_user.setdefault(r.user, Totals(r.user))
        t.sessions += 1
        t.seconds += max(0.0, min(r.stopped, until) - max(r.started, since))
        t.cpu_seconds += r.cpu_seconds or 0.0
        t.peak_memory = max(t.peak_memory, r.peak_memory or 0)
    return sorted(by_user.values(), key=lambda t: t.user)


COLUMNS = ("user", "server", "profile", "started", "stopped", "cause", "cpu_seconds",
           "peak_memory")


def to_csv(rows: list[UsageRecord]) -> str:
    """The rows as CSV with a header line; times in ISO 8601 UTC."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([r.user, r.server, r.profile, iso(r.started), iso(r.stopped), r.cause,
                         "" if r.cpu_seconds is None else f"{r.cpu_seconds:.1f}",
                         "" if r.peak_memory is None else r.peak_memory])
    return out.getvalue()


def iso(t: float) -> str:
    """2026-12-03T20:15:31Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


async def usage_ctx(app: web.Application):
    """cleanup_ctx: record usage while the hub runs."""
    recorder = UsageRecorder(app["store"])
    unsubscribe = app["spawner"].subscribe(recorder)
    yield
    unsubscribe()
    await recorder.drain()
