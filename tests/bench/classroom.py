"""Classroom mode: N new users log in through the form and press Start in the same moment.

Each student: GET /hub/login, POST the form (PAM), POST /hub/spawn/<name>, follow the progress
stream to ready, start a kernel and run one cell over the proxied websocket. Meanwhile a probe
GETs /hub/api/ and /hub/login every 100 ms, so the figures say how the hub treats the people
already there, not only how many got in. Figures, never asserts.

Run inside the booted container (as root): `make classroom` or
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
    Resources,
    api_token,
    execute_request,
    pct,
    run,
    start_hub,
    write_config,
)

STUDENT_TIMEOUT = 600.0
PROBE_SECONDS = 0.1


class Student:
    """One new OS user with a password, and the times of their first minutes."""

    def __init__(self, name: str, password: str):
        self.name, self.password = name, password
        self.login = self.ready = self.kernel = 0.0
        self.failure = ""


def make_students(res: Resources, count: int) -> list[Student]:
    """useradd each and one chpasswd for all; Resources removes them."""
    students = [Student(f"s{res.tag}{i}", secrets.token_urlsafe(12)) for i in range(count)]
    for s in students:
        run("useradd", "--create-home", "--shell", "/bin/bash", s.name)
        res.users.append(s.name)
    run("chpasswd", input="".join(f"{s.name}:{s.password}\n" for s in students))
    return students


def xsrf(session: aiohttp.ClientSession) -> str:
    """The hub's CSRF cookie, as the form's hidden field carries it."""
    return next((c.value for c in session.cookie_jar if c.key == XSRF_COOKIE), "")


async def first_minutes(base: str, student: Student, go: asyncio.Event) -> None:
    """Log in through the form, start, follow to ready, run a cell; record when each ended."""
    jar = aiohttp.CookieJar(unsafe=True)
    timeout = aiohttp.ClientTimeout(total=STUDENT_TIMEOUT)
    async with aiohttp.ClientSession(cookie_jar=jar, timeout=timeout) as http:
        await go.wait()
        t0 = time.perf_counter()
        try:
            await log_in(http, base, student)
            student.login = time.perf_counter() - t0
            await start_and_follow(http, base, student)
            student.ready = time.perf_counter() - t0
            answer = await run_cell(http, base, student.name, "6*7")
            if answer != "42":
                raise RuntimeError(f"the cell answered {answer!r}")
            student.kernel = time.perf_counter() - t0
        except (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError, KeyError) as e:
            student.failure = f"{type(e).__name__}: {e}"


async def log_in(http: aiohttp.ClientSession, base: str, student: Student) -> None:
    async with http.get(f"{base}/hub/login") as r:
        await r.read()
    form = {"_xsrf": xsrf(http), "username": student.name, "password": student.password,
            "next": "/hub/home"}
    async with http.post(f"{base}/hub/login", data=form, allow_redirects=False) as r:
        if r.status != 302:
            raise RuntimeError(f"login answered {r.status}")


async def start_and_follow(http: aiohttp.ClientSession, base: str, student: Student) -> None:
    async with http.post(f"{base}/hub/spawn/{student.name}", data={"_xsrf": xsrf(http)},
                         allow_redirects=False) as r:
        if r.status != 302:
            raise RuntimeError(f"spawn form answered {r.status}")
    async with http.get(f"{base}/hub/api/users/{student.name}/server/progress") as r:
        async for line in r.content:
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                if event.get("ready"):
                    return
                if event.get("failed"):
                    raise RuntimeError(event.get("message", "spawn failed"))
    raise RuntimeError("the progress stream ended without ready")


async def run_cell(http: aiohttp.ClientSession, base: str, name: str, code: str) -> str:
    """Start a kernel through the hub, run code over its websocket, return text/plain."""
    async with http.post(f"{base}/user/{name}/api/kernels", json={}) as r:
        if r.status != 201:
            raise RuntimeError(f"kernel start answered {r.status}")
        kernel = (await r.json())["id"]
    msg_id = uuid.uuid4().hex
    async with http.ws_connect(f"{base}/user/{name}/api/kernels/{kernel}/channels") as ws:
        await ws.send_json(execute_request(msg_id, uuid.uuid4().hex, code))
        async for msg in ws:
            reply = json.loads(msg.data)
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if reply["msg_type"] == "execute_result":
                return reply["content"]["data"]["text/plain"]
            if reply["msg_type"] == "error":
                raise RuntimeError(reply["content"]["ename"])
    raise RuntimeError("the kernel websocket closed without a result")


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
    """Peak RSS of the hub, sampled every 50 ms on a thread."""

    def __init__(self, proc: psutil.Process):
        self.proc, self.peak, self._stop = proc, 0, threading.Event()

    def __enter__(self) -> "Sampler":
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.proc.memory_info().rss)

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


async def classroom(base: str, hub: psutil.Process, students: list[Student]) -> dict:
    """All students at once, the probe beside them; the figures of one run."""
    uids = {int(run("id", "-u", s.name)) for s in students}
    go, done = asyncio.Event(), asyncio.Event()
    runs = [asyncio.create_task(first_minutes(base, s, go)) for s in students]
    prober = asyncio.create_task(probe(base, done))
    await asyncio.sleep(0.5)
    cpu_before = hub.cpu_times()
    with Sampler(hub) as rss:
        began = time.perf_counter()
        go.set()
        await asyncio.gather(*runs)
        wall = time.perf_counter() - began
        done.set()
        probes = await prober
    cpu = hub.cpu_times()
    hub_cpu = cpu.user + cpu.system - cpu_before.user - cpu_before.system
    return {"wall": wall, "probes": probes, "hub_cpu": hub_cpu, "hub_rss": rss.peak / 2**20,
            "servers_cpu": users_cpu_seconds(uids)}


def report(size: int, students: list[Student], fig: dict) -> dict:
    """Print one size's figures; return the row for the summary."""
    ok = [s for s in students if not s.failure]
    last = max((s.kernel for s in ok), default=0.0)
    ideal = fig["servers_cpu"] / (os.cpu_count() or 1)
    api, login_page = fig["probes"]["/hub/api/"], fig["probes"]["/hub/login"]
    print(f"N={size}: {len(ok)}/{size} reached a working kernel; the last after {last:.1f} s "
          f"(servers' own CPU {fig['servers_cpu']:.0f} s = {ideal:.1f} s on "
          f"{os.cpu_count()} cores: x{last / ideal if ideal else 0:.2f})")
    for what in ("login", "ready", "kernel"):
        values = [getattr(s, what) for s in ok]
        if values:
            print(f"  {what:6}: p50 {pct(values, 50):6.1f} s  p99 {pct(values, 99):6.1f} s")
    for path, values in fig["probes"].items():
        print(f"  probe {path:11}: p50 {pct(values, 50):7.1f} ms  p99 {pct(values, 99):7.1f} ms"
              f"  max {max(values):7.1f} ms  ({len(values)} requests)")
    print(f"  hub: {fig['hub_cpu']:.1f} CPU s in {fig['wall']:.1f} s, peak RSS "
          f"{fig['hub_rss']:.0f} MiB")
    failures = sorted({s.failure for s in students if s.failure})
    for failure in failures[:5]:
        print(f"  failure: {failure}")
    return {"size": size, "ready": len(ok), "last": last, "ratio": last / ideal if ideal else 0,
            "api_p99": pct(api, 99), "login_p99": pct(login_page, 99),
            "login_p50": statistics.median(s.login for s in ok) if ok else 0}


def stop_all(res: Resources, students: list[Student]) -> None:
    """Stop the servers and remove the users (Resources.remove_users)."""
    res.remove_users([s.name for s in students])


def main() -> int:
    """Set up a hub, run each classroom size, remove everything whatever happens."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="50,150,220", help="comma-separated class sizes")
    p.add_argument("--concurrent", type=int, default=0,
                   help="spawner.concurrent_spawns for this run (default: the hub's default)")
    args = p.parse_args()
    if os.geteuid() != 0 or os.environ.get("APPLIANCE_BOOTED_SYSTEMD") != "1":
        print("classroom: run as root inside the booted container (make classroom)",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.stdout.reconfigure(line_buffering=True)
    res = Resources()
    rows = []
    try:
        admin = res.make_users("b", 1)[0]
        cfg_path = write_config(res, admin=admin)
        if args.concurrent:
            with cfg_path.open("a") as f:
                f.write(f"[spawner]\nconcurrent_spawns = {args.concurrent}\n")
        start_hub(res, cfg_path)
        res.admin_token = api_token(cfg_path, admin)
        hub = psutil.Process(res.hub.pid)
        for size in [int(s) for s in args.sizes.split(",") if s]:
            students = make_students(res, size)
            try:
                fig = asyncio.run(classroom(res.hub_base, hub, students))
                rows.append(report(size, students, fig))
            finally:
                stop_all(res, students)
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        res.cleanup()
    print("\n   N  ready  last kernel  x CPU-bound  probe /hub/api/ p99  /hub/login p99  "
          "login p50")
    for r in rows:
        print(f"{r['size']:4} {r['ready']:4}   {r['last']:8.1f} s   {r['ratio']:8.2f}   "
              f"{r['api_p99']:12.1f} ms   {r['login_p99']:10.1f} ms  {r['login_p50']:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
