"""Classroom mode: N new users log in through the form and press Start in the same moment.

Each student: GET /hub/login, POST the form (PAM), POST /hub/spawn/<name>, follow the progress
stream to ready, start a kernel and run one cell over the proxied websocket. Meanwhile a probe
GETs /hub/api/ and /hub/login every 100 ms, so the figures say how the hub treats the people
already there, not only how many got in. Figures, never asserts.

The same classroom runs against our hub and against a real JupyterHub with
configurable-http-proxy and systemdspawner (tests/bench/jupyterhub_side.py), both spawning
Debian's notebook server, driven by this one client: a hub "side" object carries the few
differences (JupyterHub's _xsrf cookie, the OAuth redirects on a user's first visit to their
server, the X-XSRFToken its server wants on a POST). For each size the sides take turns, each
with new users, and a ratio table follows.

Run inside the booted container (as root): `make classroom` (builds the JupyterHub tools
with tests/bench/jupyterhub-tools.sh and binds them in) or
  APPLIANCE_BENCH_TOOLS=$(tests/bench/jupyterhub-tools.sh) \
  tests/infra/nspawn.sh "$(tests/infra/rootfs.sh)" . \
      env PYTHONPATH=/src python3 /src/tests/bench/classroom.py --sizes 50,150,220
"""

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp  # noqa: E402
import psutil  # noqa: E402

from appliance.identity import XSRF_COOKIE  # noqa: E402
from tests.bench.bench_hub import (  # noqa: E402
    HubLog,
    Resources,
    api_token,
    execute_request,
    pct,
    run,
    start_hub,
    wait_for_quiet,
    write_config,
)
from tests.bench.jupyterhub_side import JupyterHubSide  # noqa: E402

STUDENT_TIMEOUT = 600.0
#: How our queue words a start that waits for memory (spawnqueue.SpawnQueue._tell).
HELD_BACK = "waiting for memory"
HELD_BACK_GRACE = 30.0
PROBE_SECONDS = 0.1


class Student:
    """One new OS user with a password, and the times of their first minutes."""

    def __init__(self, name: str, password: str):
        self.name, self.password = name, password
        self.login = self.ready = self.kernel = 0.0
        self.failure = ""
        #: The last words of the progress stream ("You are 37th in line", "Waiting for memory").
        self.last_message = ""


class ApplianceSide:
    """Our hub, started as bench_hub starts it; its students need no extra step."""

    name = "appliance"
    xsrf_cookie = XSRF_COOKIE
    versions = "notebook-appliance (this tree), Debian's notebook 6.4.12 on a UNIX socket"

    def __init__(self, concurrent: int = 0):
        self.res = Resources()
        self.concurrent = concurrent
        self.base = ""
        self.log: HubLog | None = None

    def start(self) -> None:
        """An admin user, appliance.toml, `python3 -m appliance serve`, the admin's token."""
        admin = self.res.make_users("b", 1)[0]
        cfg_path = write_config(self.res, admin=admin)
        if self.concurrent:
            with cfg_path.open("a") as f:
                f.write(f"[spawner]\nconcurrent_spawns = {self.concurrent}\n")
        self.log = start_hub(self.res, cfg_path)
        self.res.admin_token = api_token(cfg_path, admin)
        self.base = self.res.hub_base

    def processes(self) -> list[psutil.Process]:
        """The hub: it is its own proxy."""
        return [psutil.Process(self.res.hub.pid)]

    async def open_server(self, http: aiohttp.ClientSession, name: str) -> None:
        """Nothing to do: the hub's session cookie already lets the owner into /user/<name>/."""

    def server_headers(self, http: aiohttp.ClientSession, name: str) -> dict[str, str]:
        """None: the hub checks the session, the server behind it trusts the hub."""
        return {}

    def stop_servers(self, names: list[str]) -> None:
        """DELETE each server through the API (Resources.remove_users stops units too)."""
        self.res.stop_servers(names)

    def unit_of(self, name: str) -> str:
        """The systemd unit of name's server."""
        return f"notebook-{name}.service"

    def last_log_lines(self, count: int = 15) -> str:
        """The hub's last log lines, for a failure report."""
        lines = self.log.lines[-count:] if self.log else []
        return "".join(f"      {line}" for _, line in lines)

    def cleanup(self) -> None:
        """Users, servers, hub, files (Resources.cleanup); never raises."""
        self.res.cleanup()


Side = ApplianceSide | JupyterHubSide


def server_log(unit: str, count: int = 25) -> str:
    """A server unit's last journal lines (why a student failed, in the server's words)."""
    out = subprocess.run(["journalctl", "-u", unit, "-n", str(count), "--no-pager", "-o", "cat"],
                         capture_output=True, text=True).stdout
    return "".join(f"      {line}\n" for line in out.splitlines())


def make_students(res: Resources, count: int) -> list[Student]:
    """useradd each and one chpasswd for all; Resources removes them."""
    students = [Student(f"s{res.tag}{i}", secrets.token_urlsafe(12)) for i in range(count)]
    for s in students:
        run("useradd", "--create-home", "--shell", "/bin/bash", s.name)
        res.users.append(s.name)
    run("chpasswd", input="".join(f"{s.name}:{s.password}\n" for s in students))
    return students


def xsrf(session: aiohttp.ClientSession, side: Side) -> str:
    """The hub's CSRF cookie, as the form's hidden field carries it."""
    return next((c.value for c in session.cookie_jar if c.key == side.xsrf_cookie), "")


async def first_minutes(side: Side, student: Student, go: asyncio.Event) -> None:
    """Log in through the form, start, follow to ready, run a cell; record when each ended."""
    jar = aiohttp.CookieJar(unsafe=True)
    timeout = aiohttp.ClientTimeout(total=STUDENT_TIMEOUT)
    async with aiohttp.ClientSession(cookie_jar=jar, timeout=timeout) as http:
        await go.wait()
        t0 = time.perf_counter()
        try:
            await log_in(http, side, student)
            student.login = time.perf_counter() - t0
            await start_and_follow(http, side, student)
            student.ready = time.perf_counter() - t0
            await side.open_server(http, student.name)
            answer = await run_cell(http, side, student.name, "6*7")
            if answer != "42":
                raise RuntimeError(f"the cell answered {answer!r}")
            student.kernel = time.perf_counter() - t0
        except (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError, KeyError) as e:
            student.failure = f"{type(e).__name__}: {e}"


async def log_in(http: aiohttp.ClientSession, side: Side, student: Student) -> None:
    """GET the login page (its CSRF cookie), POST the form; the hub answers 302."""
    async with http.get(f"{side.base}/hub/login") as r:
        await r.read()
    form = {"_xsrf": xsrf(http, side), "username": student.name,
            "password": student.password, "next": "/hub/home"}
    async with http.post(f"{side.base}/hub/login", data=form, allow_redirects=False) as r:
        if r.status != 302:
            raise RuntimeError(f"login answered {r.status}")


async def start_and_follow(http: aiohttp.ClientSession, side: Side, student: Student) -> None:
    """POST /hub/spawn/<name>, then read the progress stream until ready or failed."""
    base = side.base
    async with http.post(f"{base}/hub/spawn/{student.name}", data={"_xsrf": xsrf(http, side)},
                         allow_redirects=False) as r:
        if r.status != 302:
            raise RuntimeError(f"spawn form answered {r.status}")
    async with http.get(f"{base}/hub/api/users/{student.name}/server/progress") as r:
        async for line in r.content:
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                student.last_message = event.get("message", "")
                if event.get("ready"):
                    return
                if event.get("failed"):
                    raise RuntimeError(event.get("message", "spawn failed"))
    raise RuntimeError("the progress stream ended without ready")


async def run_cell(http: aiohttp.ClientSession, side: Side, name: str, code: str) -> str:
    """Start a kernel through the hub, run code over its websocket, return text/plain."""
    base = side.base
    async with http.post(f"{base}/user/{name}/api/kernels", json={},
                         headers=side.server_headers(http, name)) as r:
        if r.status != 201:
            raise RuntimeError(f"kernel start answered {r.status}")
        kernel = (await r.json())["id"]
    msg_id = uuid.uuid4().hex
    async with http.ws_connect(f"{base}/user/{name}/api/kernels/{kernel}/channels") as ws:
        await ws.send_json(execute_request(msg_id, uuid.uuid4().hex, code))
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"the kernel websocket sent {msg.type.name}: {msg.data!r}")
            reply = json.loads(msg.data)
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if reply["msg_type"] == "execute_result":
                return reply["content"]["data"]["text/plain"]
            if reply["msg_type"] == "error":
                raise RuntimeError(reply["content"]["ename"])
    raise RuntimeError("the kernel websocket closed without a result")


class Prober:
    """The probe in a process of its own, so its figures are the hub's answer times, not the
    time the benchmark's own event loop (busy with a whole class) took to notice them."""

    def __init__(self, base: str):
        self.base = base
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> "Prober":
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--probe", self.base, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        return self

    async def stop(self) -> dict[str, list[float]]:
        """End probing (its stdin closes) and return the latencies it measured."""
        out, _ = await self.proc.communicate(b"")  # b"": stdin is closed, which stops it
        return json.loads(out)

    async def __aexit__(self, *exc) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def probe_until_eof(base: str) -> None:
    """`classroom.py --probe URL`: probe until stdin closes, then print the figures as JSON."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_reader(sys.stdin.fileno(), stop.set)
    print(json.dumps(await probe(base, stop)))


async def probe(base: str, stop: asyncio.Event) -> dict[str, list[float]]:
    """GET /hub/api/ and /hub/login every PROBE_SECONDS until stop; latencies in ms."""
    times: dict[str, list[float]] = {"/hub/api/": [], "/hub/login": []}
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            for path, seen in times.items():
                began = time.perf_counter()
                async with http.get(base + path) as r:
                    await r.read()
                seen.append((time.perf_counter() - began) * 1000)
            await asyncio.sleep(PROBE_SECONDS)
    return times


class Sampler:
    """Peak RSS of the hub's processes together, sampled every 50 ms on a thread."""

    def __init__(self, procs: list[psutil.Process]):
        self.procs, self.peak, self._stop = procs, 0, threading.Event()

    def __enter__(self) -> "Sampler":
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                rss = sum(p.memory_info().rss for p in self.procs)
            except psutil.NoSuchProcess:
                continue
            self.peak = max(self.peak, rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()


def users_cpu_seconds(uids: set[int]) -> float:
    """CPU time used so far by every process of these users (servers and kernels)."""
    total = 0.0
    for p in psutil.process_iter(["uids", "cpu_times"]):
        info = p.info
        if info["uids"] and info["uids"].real in uids and info["cpu_times"]:
            total += info["cpu_times"].user + info["cpu_times"].system
    return total


def hub_cpu_seconds(procs: list[psutil.Process]) -> float:
    """CPU seconds the hub's processes (hub, proxy) have used so far."""
    return sum(t.user + t.system for t in (p.cpu_times() for p in procs))


async def classroom(side: Side, students: list[Student]) -> dict:
    """All students at once, the probe beside them; the figures of one run."""
    uids = {int(run("id", "-u", s.name)) for s in students}
    procs = side.processes()
    # The machine is shared: say how busy it was before the burst (bench_hub's reading).
    await wait_for_quiet({str(p.pid): p for p in procs}, patience=30)
    go = asyncio.Event()
    runs = [asyncio.create_task(first_minutes(side, s, go)) for s in students]
    async with Prober(side.base) as prober:
        await asyncio.sleep(0.5)
        cpu_before = hub_cpu_seconds(procs)
        used_before = used_memory()
        with Sampler(procs) as rss:
            began = time.perf_counter()
            go.set()
            await until_done_or_held_back(dict(zip(runs, students, strict=True)))
            wall = time.perf_counter() - began
            used_after = used_memory()  # every server and kernel still up
            probes = await prober.stop()
    return {"wall": wall, "probes": probes, "hub_cpu": hub_cpu_seconds(procs) - cpu_before,
            "hub_rss": rss.peak / 2**20, "servers_cpu": users_cpu_seconds(uids),
            "hub_procs": len(procs),
            "per_student": (used_after - used_before) / 2**20
                           / max(sum(1 for s in students if s.kernel), 1)}


async def until_done_or_held_back(runs: dict[asyncio.Task, Student],
                                  grace: float = HELD_BACK_GRACE) -> None:
    """Until every student is done, or those left all wait for memory and nobody else got
    anywhere for `grace` seconds: on a full machine nobody stops, so they would wait for
    ever. They are counted as held back, with the hub's words."""
    pending, last_done = set(runs), time.perf_counter()
    while pending:
        done, pending = await asyncio.wait(pending, timeout=1)
        if done:
            last_done = time.perf_counter()
        held = [runs[t] for t in pending if HELD_BACK in runs[t].last_message.lower()]
        if pending and len(held) == len(pending) and time.perf_counter() - last_done > grace:
            for task in pending:
                task.cancel()
                runs[task].failure = f"held back: {runs[task].last_message}"
            await asyncio.gather(*pending, return_exceptions=True)
            return


def used_memory() -> int:
    """The machine's memory in use (total - available), in bytes."""
    memory = psutil.virtual_memory()
    return memory.total - memory.available


def report(side: Side, size: int, students: list[Student], fig: dict) -> dict:
    """Print one size's figures for one hub; return the row for the summary."""
    ok = [s for s in students if not s.failure]
    last = max((s.kernel for s in ok), default=0.0)
    ideal = fig["servers_cpu"] / (os.cpu_count() or 1)
    api, login_page = fig["probes"]["/hub/api/"], fig["probes"]["/hub/login"]
    print(f"[{side.name}] N={size}: {len(ok)}/{size} reached a working kernel; the last after "
          f"{last:.1f} s "
          f"(servers' own CPU {fig['servers_cpu']:.0f} s = {ideal:.1f} s on "
          f"{os.cpu_count()} cores: x{last / ideal if ideal else 0:.2f})")
    for what in ("login", "ready", "kernel"):
        values = [getattr(s, what) for s in ok]
        if values:
            print(f"  {what:6}: p50 {pct(values, 50):6.1f} s  p99 {pct(values, 99):6.1f} s")
    for path, values in fig["probes"].items():
        print(f"  probe {path:11}: p50 {pct(values, 50):7.1f} ms  p99 {pct(values, 99):7.1f} ms"
              f"  max {max(values):7.1f} ms  ({len(values)} requests)")
    print(f"  hub{' + proxy' if fig['hub_procs'] > 1 else ''}: {fig['hub_cpu']:.1f} CPU s "
          f"in {fig['wall']:.1f} s, peak RSS {fig['hub_rss']:.0f} MiB; machine memory per "
          f"student (server + kernel): {fig['per_student']:.0f} MiB")
    held = [s for s in students if s.failure.startswith("held back")]
    if held:
        print(f"  held back for memory (the hub's words): {len(held)}, e.g. "
              f"{held[0].failure[len('held back: '):]!r}")
    failures = sorted({s.failure for s in students if s.failure and s not in held})
    for failure in failures[:5]:
        print(f"  failure: {failure}")
    if failures:
        print(f"  {side.name}'s last log lines:\n{side.last_log_lines()}", end="")
        first = next(s for s in students if s.failure and s not in held)
        print(f"  {first.name}'s server's last log lines ({first.failure}):\n"
              f"{server_log(side.unit_of(first.name))}", end="")
    return {"size": size, "ready": len(ok), "last": last, "ratio": last / ideal if ideal else 0,
            "api_p99": pct(api, 99), "login_p99": pct(login_page, 99),
            "login_p50": statistics.median(s.login for s in ok) if ok else 0,
            "ready_p50": statistics.median(s.ready for s in ok) if ok else 0,
            "hub_cpu": fig["hub_cpu"], "hub_rss": fig["hub_rss"]}


def stop_all(side: Side, students: list[Student]) -> None:
    """Stop the servers and remove the users (Resources.remove_users)."""
    names = [s.name for s in students]
    side.stop_servers(names)
    side.res.remove_users(names)


def parse_args() -> argparse.Namespace:
    """--sizes, --hubs, --concurrent, --jupyterhub-raised-timeouts."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="50,150,220", help="comma-separated class sizes")
    p.add_argument("--hubs", default="appliance,jupyterhub",
                   help="comma-separated hubs to measure, in turn for each size "
                        "(appliance, jupyterhub)")
    p.add_argument("--concurrent", type=int, default=0,
                   help="spawner.concurrent_spawns for this run (default: the hub's default)")
    p.add_argument("--jupyterhub-raised-timeouts", action="store_true",
                   help="JupyterHub with Spawner.start_timeout and http_timeout at 600 s "
                        "(default: JupyterHub's own defaults, 60 s and 30 s)")
    args = p.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.hubs = [h for h in args.hubs.split(",") if h]
    unknown = set(args.hubs) - {"appliance", "jupyterhub"}
    if unknown or not args.hubs:
        p.error(f"--hubs: expected appliance and/or jupyterhub, got {args.hubs}")
    return args


def make_side(name: str, args: argparse.Namespace) -> Side:
    """The hub named on --hubs, not started yet."""
    if name == "appliance":
        return ApplianceSide(concurrent=args.concurrent)
    return JupyterHubSide(raised_timeouts=args.jupyterhub_raised_timeouts)


def run_size(side: Side, size: int) -> dict:
    """One classroom of `size` new users on one hub; its printed figures' row."""
    students = make_students(side.res, size)
    try:
        fig = asyncio.run(classroom(side, students))
        return report(side, size, students, fig)
    finally:
        stop_all(side, students)


def summary(rows: dict[str, list[dict]]) -> None:
    """One table per hub, then, with two hubs, JupyterHub / appliance for each size."""
    for name, table in rows.items():
        print(f"\n{name}\n   N  ready  last kernel  x CPU-bound  probe /hub/api/ p99  "
              "/hub/login p99  login p50  hub CPU")
        for r in table:
            print(f"{r['size']:4} {r['ready']:4}   {r['last']:8.1f} s   {r['ratio']:8.2f}   "
                  f"{r['api_p99']:12.1f} ms   {r['login_p99']:10.1f} ms  "
                  f"{r['login_p50']:6.1f} s  {r['hub_cpu']:6.1f} s")
    if set(rows) != {"appliance", "jupyterhub"}:
        return
    columns = {"last": "last kernel", "ready_p50": "ready p50", "login_p50": "login p50",
               "api_p99": "/hub/api/ p99", "login_p99": "/hub/login p99",
               "hub_cpu": "hub CPU", "hub_rss": "hub RSS"}
    print("\njupyterhub / appliance (above 1: JupyterHub slower or heavier)\n"
          "   N  ready JH/ours  " + "  ".join(f"{c:>14}" for c in columns.values()))
    for ours, theirs in zip(rows["appliance"], rows["jupyterhub"], strict=True):
        ready = f"{theirs['ready']}/{ours['ready']}"
        print(f"{ours['size']:4}  {ready:>13}  "
              + "  ".join(f"{ratio(theirs[k], ours[k]):>14}" for k in columns))


def ratio(theirs: float, ours: float) -> str:
    """theirs/ours as 'x1.23', or '-' when ours is zero (nobody got there)."""
    return f"x{theirs / ours:.2f}" if ours else "-"


def main() -> int:
    """Start the hubs, run each classroom size on each, remove everything whatever happens."""
    if sys.argv[1:2] == ["--probe"]:
        asyncio.run(probe_until_eof(sys.argv[2]))
        return 0
    args = parse_args()
    if os.geteuid() != 0 or os.environ.get("APPLIANCE_BOOTED_SYSTEMD") != "1":
        print("classroom: run as root inside the booted container (make classroom)",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.stdout.reconfigure(line_buffering=True)
    sides = [make_side(name, args) for name in args.hubs]
    rows: dict[str, list[dict]] = {side.name: [] for side in sides}
    try:
        for side in sides:
            side.start()
            print(f"{side.name}: {side.base}  ({side.versions})")
        for size in args.sizes:
            # Each size's hubs in turn, so a change in the shared machine's load between
            # sizes hits both sides alike.
            for side in sides:
                rows[side.name].append(run_size(side, size))
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        for side in sides:
            side.cleanup()
    summary(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
