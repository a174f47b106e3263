"""/hub/admin: the classroom console for administrators. One row per user who can or did log
in, live numbers from the servers' own cgroups, and the actions a teacher needs (start, stop,
open, stop all, stop the idle), each confirmed in a second step and checked for CSRF.

Rendered on the server (sorting, filtering, a sparkline as inline SVG); a small script follows
/hub/admin/stream (server-sent events) to refresh the numbers without reloading.
"""

import asyncio
import json
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web

from appliance import access, accountwatch, capacity, cgroups, usage
from appliance.api import start_spawn
from appliance.errors import Conflict, Forbidden
from appliance.events import Cause
from appliance.pages import checked_form, current, redirect, render

#: How often the live stream sends new numbers.
STREAM_EVERY = 3.0
SORTS = ("name", "admin", "state", "memory", "cpu", "started", "activity")
STATES = ("running", "starting", "stopping", "stopped")
#: What an administrator reads when the hub may not manage accounts.
TURNED_OFF = ("Importing a roster and removing users from the hub are off: set "
              "manage_accounts = true under [auth] in /etc/notebook-appliance/appliance.toml "
              "and restart the hub (systemctl restart notebook-appliance).")


@dataclass
class Row:
    """One user as the admin page shows them."""

    name: str
    admin: bool
    state: str
    memory: int | None = None
    memory_limit: int | None = None
    cpu_percent: float | None = None
    started: float | None = None
    last_activity: float | None = None
    sparkline: str = ""
    named: int = 0

    @property
    def memory_share(self) -> float:
        """memory / limit, 0..1, for the bar."""
        if not self.memory or not self.memory_limit:
            return 0.0
        return min(1.0, self.memory / self.memory_limit)

    def live(self) -> dict:
        """What the stream sends for this row."""
        return {"name": self.name, "state": self.state, "memory": self.memory,
                "memory_limit": self.memory_limit, "cpu_percent": self.cpu_percent,
                "memory_share": self.memory_share, "last_activity": self.last_activity,
                "sparkline": self.sparkline}


def setup(app: web.Application) -> None:
    """Register the admin routes."""
    r = app.router
    r.add_get("/hub/admin", admin_page)
    r.add_get("/hub/admin/stream", admin_stream)
    r.add_post("/hub/admin/action", admin_action)
    r.add_get("/hub/admin/usage", usage_page)
    r.add_get("/hub/admin/usage.csv", usage_csv)


async def require_admin(request: web.Request):
    """The logged-in admin; Forbidden for everyone else."""
    identity = await current(request)
    if not access.allows(identity, "admin-ui"):
        raise Forbidden(f"{identity.name} is not an admin",
                        user_message="Only administrators may open the admin page.")
    return identity


async def rows(app: web.Application) -> list[Row]:
    """Everyone who can log in or has logged in, with their default server's numbers."""
    loop = asyncio.get_running_loop()
    accounts = await loop.run_in_executor(None, app["auth"].admitted_sync)
    for user in await app["store"].list_users():
        accounts.setdefault(user.name, user.admin)
    spawner = app["spawner"]
    out = []
    for name, admin in accounts.items():
        server = spawner.find(name)
        row = Row(name, admin, str(server.state) if server else "stopped",
                  named=len(spawner.named(name)))
        if server is not None:
            fill_numbers(row, spawner, server)
        out.append(row)
    return out


def fill_numbers(row: Row, spawner, server) -> None:
    """Memory, CPU, times and the sparkline of a user's server from the cgroup sampler."""
    row.started, row.last_activity = server.started, server.last_activity
    if not server.ready:
        return
    live = cgroups.figures(spawner.sampler, server)
    row.memory, row.memory_limit, row.cpu_percent = (live["memory"], live["memory_limit"],
                                                     live["cpu_percent"])
    row.sparkline = sparkline([m for _, m in spawner.sampler.history.get(server.unit, ())],
                              row.memory_limit)


def sparkline(values: list[int], top: int | None, width: int = 120, height: int = 20) -> str:
    """An inline SVG polyline of memory over the last 30 minutes ('' with under 2 points)."""
    if len(values) < 2:
        return ""
    top = max(top or 0, max(values), 1)
    step = width / (len(values) - 1)
    points = " ".join(f"{i * step:.1f},{height - v / top * height:.1f}"
                      for i, v in enumerate(values))
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} '
            f'{height}" role="img" aria-label="memory, last 30 minutes"><polyline '
            f'points="{points}" fill="none" stroke="currentColor" stroke-width="1.5"/></svg>')


def select(all_rows: list[Row], q: str, state: str, sort: str, desc: bool) -> list[Row]:
    """Filter by name part and state, then sort (missing numbers last)."""
    picked = [r for r in all_rows if q.lower() in r.name.lower()
              and (not state or r.state == state)]
    key = {"name": lambda r: r.name, "admin": lambda r: (not r.admin, r.name),
           "state": lambda r: (r.state, r.name)}.get(sort)
    if key is not None:
        return sorted(picked, key=key, reverse=desc)
    attr = {"memory": "memory", "cpu": "cpu_percent", "started": "started",
            "activity": "last_activity"}[sort]
    known = sorted((r for r in picked if getattr(r, attr) is not None),
                   key=lambda r: getattr(r, attr), reverse=desc)
    return known + sorted((r for r in picked if getattr(r, attr) is None), key=lambda r: r.name)


async def admin_page(request: web.Request) -> web.Response:
    """GET /hub/admin: the table, sorted and filtered as the query asks."""
    await require_admin(request)
    q = request.query.get("q", "")
    state = request.query.get("state", "") if request.query.get("state") in STATES else ""
    sort = request.query.get("sort") if request.query.get("sort") in SORTS else "name"
    desc = request.query.get("order") == "desc"
    shown = select(await rows(request.app), q, state, sort, desc)
    links = {s: "?" + urlencode({"q": q, "state": state, "sort": s,
                                 "order": "asc" if s == sort and desc else
                                 ("desc" if s == sort else "asc")}) for s in SORTS}
    host = await capacity.host_figures(request.app["spawner"])
    return render(request, "admin.html", rows=shown, host=host, urls=request.app["urls"],
                  q=q, state=state, sort=sort, desc=desc, links=links, states=STATES,
                  done=request.query.get("done", ""),
                  admin_access=request.app["config"].auth.admin_access, now=time.time(),
                  manage_accounts=request.app["config"].auth.manage_accounts,
                  turned_off=TURNED_OFF,
                  confirm=None)


async def admin_stream(request: web.Request) -> web.StreamResponse:
    """GET /hub/admin/stream: every STREAM_EVERY seconds, the rows' numbers and the host's."""
    await require_admin(request)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store"})
    await response.prepare(request)
    while True:
        data = {"host": await capacity.host_figures(request.app["spawner"]),
                "rows": [r.live() for r in await rows(request.app) if r.state != "stopped"
                         or r.started]}
        await response.write(f"data: {json.dumps(data)}\n\n".encode())
        await asyncio.sleep(STREAM_EVERY)


ACTIONS = {
    "start": "Start {user}'s server",
    "stop": "Stop {user}'s server",
    "stop-all": "Stop every running server",
    "stop-idle": "Stop every server idle for more than {minutes} minutes",
    "remove": "Remove {user} from the hub",
}
#: What the confirmation page says under each action.
HINTS = {
    "remove": "Their servers stop, their sessions and tokens end, and the hub forgets them. "
              "Their OS account and home stay (they can log in again while the account "
              "exists); to delete both: deluser --remove-home {user}",
}
HINT = "Files are kept; a stopped server can be started again."


async def admin_action(request: web.Request) -> web.Response:
    """POST /hub/admin/action: first a confirmation page, then (confirm=yes) the action;
    the result in words back on the admin page."""
    identity = await require_admin(request)
    form = await checked_form(request)
    action = str(form.get("action", ""))
    user = str(form.get("user", ""))
    minutes = str(form.get("minutes", "60"))
    if action not in ACTIONS or (action in ("start", "stop", "remove") and not user) or (
            action == "stop-idle" and not (minutes.isdigit() and int(minutes) > 0)):
        raise Conflict(f"bad admin action {action!r}", user_message="That action is unknown.")
    if action == "remove" and not request.app["config"].auth.manage_accounts:
        raise Forbidden(f"{identity.name}: auth.manage_accounts is off", user_message=TURNED_OFF)
    words = ACTIONS[action].format(user=user, minutes=minutes)
    if form.get("confirm") != "yes":
        return render(request, "admin_confirm.html", words=words, action=action, target=user,
                      minutes=minutes, hint=HINTS.get(action, HINT).format(user=user))
    done = await perform(request, identity, action, user, int(minutes) if
                         minutes.isdigit() else 60)
    redirect("/hub/admin?" + urlencode({"done": done}))


async def perform(request: web.Request, identity, action: str, user: str,
                  minutes: int) -> str:
    """Carry an admin action out; what happened, in words."""
    spawner = request.app["spawner"]
    if action == "start":
        try:
            await start_spawn(request, user, "", None)
        except Conflict:
            return f"{user}'s server is already running or starting."
        return f"{user}'s server is starting."
    if action == "remove":
        stopped, sessions, tokens = await accountwatch.remove_from_hub(request.app, user,
                                                                       identity.name)
        return (f"Removed {user} from the hub: {stopped} server(s) stopped, {sessions} "
                f"session(s) and {tokens} token(s) ended. Their OS account and home are kept; "
                f"to delete them: deluser --remove-home {user}")
    if action == "stop":
        try:
            await spawner.stop(user, cause=access.stop_cause(identity, user))
        except Conflict:
            return f"{user}'s server was not running."
        return f"{user}'s server is stopped."
    cutoff = time.time() - minutes * 60
    targets = [s for s in spawner.running() if action == "stop-all"
               or max(s.last_activity or 0, s.started or 0) < cutoff]
    results = await asyncio.gather(*(spawner.stop(s.user, s.name, cause=Cause.ADMIN)
                                     for s in targets), return_exceptions=True)
    stopped = sum(1 for r in results if not isinstance(r, Exception))
    what = "running" if action == "stop-all" else f"idle for more than {minutes} minutes"
    return f"Stopped {stopped} server{'s' if stopped != 1 else ''} {what}."



#: The periods the usage page offers, in days.
PERIODS = (1, 7, 30, 120)


def period_of(request: web.Request) -> tuple[int, float, float]:
    """(days, since, until) from ?days= (default 7)."""
    days = request.query.get("days", "7")
    days = int(days) if days.isdigit() and int(days) in PERIODS else 7
    until = time.time()
    return days, until - days * 86400, until


async def usage_page(request: web.Request) -> web.Response:
    """GET /hub/admin/usage: per-user totals over a period, and the sessions' CSV."""
    await require_admin(request)
    days, since, until = period_of(request)
    sessions = await request.app["store"].usage(since, until)
    return render(request, "admin_usage.html", days=days, periods=PERIODS,
                  totals=usage.totals(sessions, since, until), sessions=len(sessions))


async def usage_csv(request: web.Request) -> web.Response:
    """GET /hub/admin/usage.csv?days=N: every session of the period, one line each."""
    await require_admin(request)
    days, since, until = period_of(request)
    text = usage.to_csv(await request.app["store"].usage(since, until))
    return web.Response(text=text, content_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="usage-{days}d.csv"',
        "Cache-Control": "no-store"})
