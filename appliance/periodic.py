"""The hub's background jobs: a round every N seconds while the hub runs, each its own
cleanup_ctx (aiohttp's background_tasks example). A round that fails is logged and the next
one comes as usual, so one bad reading never stops the job."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

Round = Callable[[web.Application], Awaitable[object]]


async def every(app: web.Application, seconds: float, round_: Round, what: str) -> None:
    """Run round_(app) every `seconds` until cancelled."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await round_(app)
        except Exception:
            log.exception("%s failed; trying again in %g s", what, seconds)


def job(what: str, seconds: Callable[[web.Application], float], round_: Round,
        enabled: Callable[[web.Application], bool] = lambda app: True):
    """A cleanup_ctx that runs round_ every seconds(app) while the hub runs (if enabled)."""
    async def ctx(app: web.Application):
        task = asyncio.create_task(every(app, seconds(app), round_, what), name=what) \
            if enabled(app) else None
        yield
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return ctx
