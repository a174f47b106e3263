"""/hub/metrics in Prometheus' text format (the only prometheus_client importer).

JupyterHub's metric names where they exist, so its dashboards work: running servers, total
and active users, spawn durations by status, request durations; and per server, memory and
CPU from the cgroup sampler. Readable with an admin's token, or without one from loopback
when metrics.allow_loopback is on (a Prometheus on the same box).
"""

import time

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from appliance import access
from appliance.clientaddr import is_loopback
from appliance.errors import NotAuthenticated
from appliance.events import Cause, Event, Kind

#: JupyterHub's buckets for spawn times (seconds): a classroom's spawns take 1 s to minutes.
SPAWN_BUCKETS = (0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 180, 300, 600, float("inf"))
#: Active users over these periods, as JupyterHub's jupyterhub_active_users{period}.
PERIODS = {"24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}


class Metrics:
    """The hub's metrics: a registry of its own (no globals), fed by events and requests."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.running = Gauge("jupyterhub_running_servers", "Servers that are ready",
                             registry=r)
        self.pending = Gauge("jupyterhub_pending_servers", "Servers starting or stopping",
                             registry=r)
        self.total_users = Gauge("jupyterhub_total_users", "Users the hub knows", registry=r)
        self.active_users = Gauge("jupyterhub_active_users", "Users active in the period",
                                  ["period"], registry=r)
        self.spawns = Histogram("jupyterhub_server_spawn_duration_seconds",
                                "Time from asking for a server to it being ready (or not)",
                                ["status"], buckets=SPAWN_BUCKETS, registry=r)
        self.requests = Histogram("jupyterhub_request_duration_seconds",
                                  "Time the hub took to answer (proxied: until headers)",
                                  ["method", "handler", "code"], registry=r)
        self.memory = Gauge("appliance_server_memory_bytes", "A server's memory now (cgroup)",
                            ["user", "server"], registry=r)
        self.memory_limit = Gauge("appliance_server_memory_limit_bytes",
                                  "A server's MemoryMax=", ["user", "server"], registry=r)
        self.cpu = Gauge("appliance_server_cpu_cores", "CPU a server used over the last "
                         "sample, in cores", ["user", "server"], registry=r)
        self._spawning: dict[tuple[str, str], float] = {}

    def on_event(self, event: Event) -> None:
        """Listener: time spawns from started to ready, or to a failed stop."""
        key = (event.server.user, event.server.name)
        if event.kind == Kind.STARTED:
            self._spawning[key] = event.at
        elif event.kind in (Kind.READY, Kind.STOPPED) and key in self._spawning:
            began = self._spawning.pop(key)
            status = "success" if event.kind == Kind.READY else (
                "failure" if event.cause == Cause.FAILED else "cancelled")
            self.spawns.labels(status=status).observe(event.at - began)

    async def refresh(self, app: web.Application) -> None:
        """Set the gauges from the spawner, the sampler and the store, just before a scrape."""
        spawner = app["spawner"]
        servers = list(spawner.servers.values())
        self.running.set(sum(1 for s in servers if s.ready))
        self.pending.set(sum(1 for s in servers if s.pending))
        users = await app["store"].list_users()
        self.total_users.set(len(users))
        now = time.time()
        for period, seconds in PERIODS.items():
            self.active_users.labels(period=period).set(
                sum(1 for u in users if u.last_activity and now - u.last_activity < seconds))
        for gauge in (self.memory, self.memory_limit, self.cpu):
            gauge.clear()
        for server in spawner.running():
            labels = {"user": server.user, "server": server.name}
            if server.profile is not None:
                self.memory_limit.labels(**labels).set(server.profile.memory)
            reading = spawner.sampler.latest.get(server.unit)
            if reading is not None and reading.memory is not None:
                self.memory.labels(**labels).set(reading.memory)
            cores = spawner.sampler.cpu_cores(server.unit)
            if cores is not None:
                self.cpu.labels(**labels).set(cores)


@web.middleware
async def timing_middleware(request: web.Request, handler):
    """Time every request by its route (a pattern, so one series per route, not per URL)."""
    began = time.perf_counter()
    code = 500
    try:
        response = await handler(request)
        code = response.status
        return response
    except web.HTTPException as e:
        code = e.status
        raise
    finally:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        request.app["metrics"].requests.labels(method=request.method, handler=name,
                                               code=str(code)).observe(
            time.perf_counter() - began)


async def serve_metrics(request: web.Request) -> web.Response:
    """GET /hub/metrics: for read:metrics (admins' tokens), or loopback when
    metrics.allow_loopback."""
    if not _loopback_allowed(request):
        identity = await request.app["identities"].of_request(request)
        if identity is None:
            raise NotAuthenticated("no credentials for /hub/metrics",
                                   user_message="Send an administrator's API token.")
        access.require(identity, "read:metrics")
    metrics = request.app["metrics"]
    await metrics.refresh(request.app)
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _loopback_allowed(request: web.Request) -> bool:
    """metrics.allow_loopback, and the peer is this machine."""
    return request.app["config"].metrics.allow_loopback and is_loopback(request.remote)


async def metrics_ctx(app: web.Application):
    """cleanup_ctx: the metrics hear every lifecycle event while the hub runs."""
    unsubscribe = app["spawner"].subscribe(app["metrics"].on_event)
    yield
    unsubscribe()


def setup(app: web.Application) -> None:
    """The registry, its route and its request timer."""
    app["metrics"] = Metrics()
    app.router.add_get("/hub/metrics", serve_metrics)
