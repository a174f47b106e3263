"""Benchmark the real hub against a real notebook server in a booted systemd; prints figures.

Run inside the nspawn container (as root), e.g. `make bench`, or:
  tests/infra/nspawn.sh "$(tests/infra/rootfs.sh)" . \
      env PYTHONPATH=/src python3 /src/tests/bench/bench_hub.py [--burst 30,50] [--quick]

The hub runs as its own process (`python3 -m appliance --config CFG serve`) so the load
generator never shares its event loop. Everything it makes (OS users, a PAM service file, a
runtime directory, units) has a unique name and is removed at the end, also on Ctrl-C.
Direct and hub paths are driven by the same client code (a minimal keep-alive HTTP/1.1 client
over asyncio streams: a UNIX socket one way, TCP the other), so the comparison is fair; wrk
is run against the hub only (it cannot reach a UNIX socket), for comparison with JupyterHub.
No asserts: this is a measurement, not a test.
"""

import argparse
import asyncio
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp  # noqa: E402
import psutil  # noqa: E402

from appliance import config, profiles, units  # noqa: E402
from appliance.rundir import prepare_directory  # noqa: E402
from appliance.systemd import Systemd  # noqa: E402
from appliance.upstream import probe  # noqa: E402
from tests.ports import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DOWNLOAD = 100 * 1024 * 1024
SPAWN_TIMEOUT = 240.0
TARGETS = {"latency": "<= +0.3 ms", "throughput": ">= 95 %", "kernel": "<= 10 ms",
           "spawn": "<= 50 ms"}
#: Cores other processes used just before each measurement (wait_for_quiet's readings).
BACKGROUND: list[float] = []
JUPYTERHUB = {"latency": "+1.2 ms", "throughput": "83 %", "kernel": "48 ms (TCP)",
              "spawn": "~1.8 s", "burst": "0/50 ready"}


# --- OS resources ----------------------------------------------------------------------------

def run(*argv: str, input: str | None = None, check: bool = True) -> str:
    """Run a command; return its stdout."""
    return subprocess.run(argv, input=input, text=True, capture_output=True,
                          check=check).stdout.strip()


class Resources:
    """Every throwaway thing the benchmark makes, so cleanup() can remove it all."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.users: list[str] = []
        self.units: set[str] = set()
        self.pgids: set[int] = set()
        self.paths: list[Path] = []
        self.hub: subprocess.Popen | None = None
        self.hub_base = ""
        self.admin_token = ""

    def make_users(self, prefix: str, count: int) -> list[str]:
        """useradd + one chpasswd for `count` new users."""
        names = [f"{prefix}{self.tag}{i}" for i in range(count)]
        for name in names:
            run("useradd", "--create-home", "--shell", "/bin/bash", name)
            self.users.append(name)
        run("chpasswd", input="".join(f"{n}:{secrets.token_urlsafe(12)}\n" for n in names))
        return names

    def remove_users(self, names: list[str]) -> None:
        """Stop the users' servers (API, then systemd by unit name) and userdel -r them."""
        self.stop_servers(names)
        for name in names:
            run("systemctl", "stop", units.unit_name(name), check=False)
            run("userdel", "--remove", "--force", name, check=False)
            if name in self.users:
                self.users.remove(name)

    def stop_servers(self, names: list[str]) -> None:
        """DELETE …/server for each user, synchronously (works after the loop is gone)."""
        if not (self.hub and self.hub.poll() is None and self.admin_token):
            return
        for name in names:
            req = urllib.request.Request(f"{self.hub_base}/hub/api/users/{name}/server",
                                         method="DELETE",
                                         headers={"Authorization": f"token {self.admin_token}"})
            try:
                urllib.request.urlopen(req, timeout=40).close()
            except OSError:
                pass

    def cleanup(self) -> None:
        """Remove everything, in reverse order of dependency; never raises."""
        for pgid in list(self.pgids):
            kill_group(pgid)
        self.remove_users(list(self.users))
        for unit in self.units:
            run("systemctl", "stop", unit, check=False)
        if self.hub is not None and self.hub.poll() is None:
            self.hub.terminate()
            try:
                self.hub.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.hub.kill()
        for path in self.paths:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def kill_group(pgid: int) -> None:
    """SIGTERM a process group we started, by its id."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass



def write_config(res: Resources, admin: str) -> Path:
    """A PAM service under a unique name and an appliance.toml; returns the config path."""
    pam = f"notebook-appliance-bench-{res.tag}"
    shutil.copy(REPO / "etc/pam.d/notebook-appliance", f"/etc/pam.d/{pam}")
    res.paths.append(Path(f"/etc/pam.d/{pam}"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    res.paths.append(tmp)
    # The runtime directory is under /run, not /tmp: the units have PrivateTmp=yes, so a
    # socket under the host's /tmp would be invisible to them (and /run is tmpfs, as in
    # production).
    runtime = Path(f"/run/notebook-appliance-bench-{res.tag}")
    res.paths.append(runtime)
    port = free_port()
    res.hub_base = f"http://127.0.0.1:{port}"
    path = tmp / "appliance.toml"
    path.write_text(
        f'[hub]\nlisten = "127.0.0.1"\nport = {port}\nstate_dir = "{tmp}/state"\n'
        f'runtime_dir = "{runtime}"\n[auth]\npam_service = "{pam}"\n'
        f'admin_users = ["{admin}"]\n')
    return path


class HubLog:
    """The hub's stderr, each line stamped with perf_counter() when it arrived."""

    def __init__(self, stream, copy: Path):
        self.lines: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, args=(stream, copy), daemon=True)
        self._thread.start()

    def _read(self, stream, copy: Path) -> None:
        with copy.open("w") as out:
            for line in stream:
                self.lines.append((time.perf_counter(), line))
                out.write(line)
                out.flush()

    def first(self, pattern: str, after: float) -> float | None:
        """When the first line matching pattern arrived after `after`."""
        regex = re.compile(pattern)
        return next((t for t, line in list(self.lines) if t > after and regex.search(line)),
                    None)


def start_hub(res: Resources, cfg_path: Path) -> HubLog:
    """Start `python3 -m appliance serve` as a separate process; wait until it listens."""
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "PYTHONPATH": str(REPO),
           "PYTHONDONTWRITEBYTECODE": "1"}
    res.hub = subprocess.Popen(
        [sys.executable, "-m", "appliance", "--config", str(cfg_path), "serve"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    log = HubLog(res.hub.stderr, cfg_path.with_name("hub.log"))
    port = int(res.hub_base.rsplit(":", 1)[1])
    for _ in range(600):
        if res.hub.poll() is not None:
            raise RuntimeError(f"hub exited ({res.hub.returncode}); see {cfg_path.parent}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return log
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("hub did not listen within 30 s")


def api_token(cfg_path: Path, user: str) -> str:
    """`python3 -m appliance --config CFG token USER`."""
    return subprocess.run([sys.executable, "-m", "appliance", "--config", str(cfg_path),
                           "token", user], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.strip()


# --- a minimal keep-alive HTTP/1.1 client: the same code both ways ---------------------------

class RawHTTP:
    """One keep-alive connection sending the same GET again and again."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 request: bytes):
        self.reader, self.writer, self.request = reader, writer, request

    @classmethod
    async def open(cls, target: "Target", path: str) -> "RawHTTP":
        """Connect to target (UNIX socket or TCP) for GETs of path."""
        if target.sock:
            reader, writer = await asyncio.open_unix_connection(target.sock)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP,
                                                       socket.TCP_NODELAY, 1)
        request = (f"GET {path} HTTP/1.1\r\nHost: {target.host}\r\n"
                   f"Authorization: token {target.token}\r\n\r\n").encode()
        return cls(reader, writer, request)

    async def get(self) -> int:
        """Send the GET, read the whole (Content-Length) response; return the status."""
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
        if length is None:
            raise RuntimeError(f"no Content-Length in {head[:200]!r}")
        await self.reader.readexactly(int(length[1]))
        return int(head[9:12])

    def close(self) -> None:
        """Close the connection."""
        self.writer.close()


class Target:
    """One way to the notebook server: its UNIX socket (direct) or the hub's TCP port."""

    def __init__(self, name: str, token: str, sock: str = "", port: int = 0):
        self.name, self.token, self.sock, self.port = name, token, sock, port
        self.host = "localhost" if sock else f"127.0.0.1:{port}"
        self.base = "http://notebook" if sock else f"http://127.0.0.1:{port}"

    def session(self, **kw) -> aiohttp.ClientSession:
        """An aiohttp session that reaches this target, sending its token."""
        connector = (aiohttp.UnixConnector(path=self.sock, limit=0) if self.sock
                     else aiohttp.TCPConnector(limit=0))
        headers = {"Authorization": f"token {self.token}", **kw.pop("headers", {})}
        return aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                     headers=headers, **kw)


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def latency(targets: list[Target], path: str, n: int, blocks: int = 4) -> dict:
    """n sequential GETs per target on one connection each, in alternating blocks (so drift
    in the machine's load hits both alike), after a warm-up; {name: {p50, p99}} in ms."""
    conns = {t.name: await RawHTTP.open(t, path) for t in targets}
    times: dict[str, list[float]] = {t.name: [] for t in targets}
    try:
        for t in targets:
            status = await conns[t.name].get()
            if status != 200:
                raise RuntimeError(f"{t.name}: GET {path} answered {status}")
            for _ in range(200):
                await conns[t.name].get()
        for _ in range(blocks):
            for t in targets:
                conn, out = conns[t.name], times[t.name]
                for _ in range(n // blocks):
                    start = time.perf_counter()
                    await conn.get()
                    out.append((time.perf_counter() - start) * 1000)
    finally:
        for conn in conns.values():
            conn.close()
    return {name: {"p50": pct(v, 50), "p99": pct(v, 99)} for name, v in times.items()}


async def throughput(target: Target, path: str, connections: int, seconds: float,
                     procs: dict[str, psutil.Process]) -> dict:
    """Requests/s from `connections` keep-alive loops; CPU ms per request of each process,
    and how many cores everything else on the machine used meanwhile."""
    conns = [await RawHTTP.open(target, path) for _ in range(connections)]
    done = 0

    async def loop(conn: RawHTTP, deadline: float) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await conn.get()
            done += 1
    await asyncio.gather(*(c.get() for c in conns))  # warm: every connection open upstream
    cpu_before = {k: cpu_seconds(p) for k, p in procs.items()}
    host_before = host_busy_seconds()
    start = time.perf_counter()
    await asyncio.gather(*(loop(c, start + seconds) for c in conns))
    elapsed = time.perf_counter() - start
    used = {k: cpu_seconds(p) - cpu_before[k] for k, p in procs.items()}
    others = (host_busy_seconds() - host_before - sum(used.values())) / elapsed
    for conn in conns:
        conn.close()
    return {"rps": done / elapsed, "cpu_ms": {k: v * 1000 / done for k, v in used.items()},
            "others": max(others, 0.0)}


async def wait_for_quiet(procs: dict[str, psutil.Process], limit: float = 0.25,
                         patience: float = 90.0, quiet: bool = True) -> float:
    """Wait (up to `patience` s) until other processes use under `limit` cores over one
    second; return the last reading. The machine is shared: say how busy it was."""
    deadline = time.perf_counter() + patience
    while True:
        ours = sum(cpu_seconds(p) for p in procs.values())
        host = host_busy_seconds()
        await asyncio.sleep(1.0)
        others = host_busy_seconds() - host - (sum(cpu_seconds(p) for p in procs.values())
                                               - ours)
        if others < limit or time.perf_counter() > deadline:
            if quiet or others >= limit:
                print(f"    [other processes on the machine: {max(others, 0):.2f} cores]")
            BACKGROUND.append(max(others, 0.0))
            return max(others, 0.0)


def host_busy_seconds() -> float:
    """CPU seconds every process on the machine has used (/proc/stat is not namespaced)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds of a process and its children so far."""
    t = proc.cpu_times()
    return t.user + t.system


def wrk(url: str, token: str, connections: int, seconds: int = 8) -> dict:
    """wrk against the hub: requests/s and p50/p99 in ms."""
    out = run("wrk", "-t", "1" if connections == 1 else "2", "-c", str(connections),
              "-d", f"{seconds}s", "--latency", "-H", f"Authorization: token {token}", url)
    figures = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for p in ("50", "99"):
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
        figures[f"p{p}"] = float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    figures["errors"] = int(non2xx[1]) if non2xx else 0
    return figures


class PeakRSS:
    """Samples a process's RSS every 20 ms in a thread; .peak in MiB."""

    def __init__(self, proc: psutil.Process):
        self.proc, self.peak, self._stop = proc, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss / 2**20)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


async def download(target: Target, path: str) -> float:
    """Seconds to GET path, reading the body as it streams."""
    async with target.session(headers={"Accept-Encoding": "identity"}) as session:
        start = time.perf_counter()
        async with session.get(target.base + path) as resp:
            size = 0
            async for chunk in resp.content.iter_any():
                size += len(chunk)
        if resp.status != 200 or size != DOWNLOAD:
            raise RuntimeError(f"{target.name}: download got {resp.status}, {size} bytes")
        return time.perf_counter() - start


def execute_request(msg_id: str, session: str, code: str) -> dict:
    """A Jupyter messaging protocol 5.3 execute_request on the shell channel."""
    return {
        "header": {"msg_id": msg_id, "username": "bench", "session": session,
                   "msg_type": "execute_request", "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }


async def execute_round_trips(target: Target, channels: str, n: int) -> dict:
    """n execute_request → execute_reply round trips on one websocket; p50/p99 in ms."""
    session_id = uuid.uuid4().hex
    async with target.session() as session, \
            session.ws_connect(target.base + channels, max_msg_size=0) as ws:
        times = []
        for i in range(n + 20):  # the first 20 warm up
            msg_id = uuid.uuid4().hex
            start = time.perf_counter()
            await ws.send_str(json.dumps(execute_request(msg_id, session_id, "1 + 1")))
            while True:
                msg = json.loads(await ws.receive_str())
                if (msg["msg_type"] == "execute_reply"
                        and msg["parent_header"].get("msg_id") == msg_id):
                    break
            if i >= 20:
                times.append((time.perf_counter() - start) * 1000)
    return {"p50": pct(times, 50), "p99": pct(times, 99)}


# --- spawning --------------------------------------------------------------------------------

async def api_spawn(hub: Target, user: str) -> tuple[float, str]:
    """POST …/server, then follow …/progress until ready; (seconds, failure or '')."""
    start = time.perf_counter()
    try:
        return await _api_spawn(hub, user, start)
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        return time.perf_counter() - start, f"{user}: {e!r} after {SPAWN_TIMEOUT:.0f} s limit"


async def _api_spawn(hub: Target, user: str, start: float) -> tuple[float, str]:
    timeout = aiohttp.ClientTimeout(total=SPAWN_TIMEOUT)
    async with hub.session(timeout=timeout) as session:
        async with session.post(f"{hub.base}/hub/api/users/{user}/server") as resp:
            body = await resp.read()
        if resp.status == 201:
            return time.perf_counter() - start, ""
        if resp.status != 202:
            return time.perf_counter() - start, f"POST {resp.status}: {body[:200]!r}"
        async with session.get(f"{hub.base}/hub/api/users/{user}/server/progress") as resp:
            async for line in resp.content:
                if not line.startswith(b"data: "):
                    continue
                event = json.loads(line[6:])
                if event.get("ready"):
                    return time.perf_counter() - start, ""
                if event.get("failed"):
                    return time.perf_counter() - start, event.get("message", "failed")
    return time.perf_counter() - start, "progress stream ended without ready"


async def api_stop(hub: Target, user: str) -> None:
    """DELETE …/server and wait for it to be stopped."""
    async with hub.session(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for _ in range(60):
            async with session.delete(f"{hub.base}/hub/api/users/{user}/server") as resp:
                if resp.status == 204:
                    return
            await asyncio.sleep(0.5)


class BareServer:
    """The same notebook command, environment and config, started without the hub."""

    def __init__(self, cfg: config.Config, res: Resources, user: str):
        entry = pwd.getpwnam(user)
        self.res = res
        self.owner = units.Owner(user, entry.pw_uid, entry.pw_gid, entry.pw_dir,
                                 entry.pw_shell)
        self.paths = units.ServerPaths.for_user(cfg.hub.runtime_dir, user, "bench")
        self.url = units.base_url(user)
        self.profile = profiles.load(cfg)[0]
        self.argv = [*self.profile.command, f"--config={units.JUPYTER_CONFIG}"]
        self.env = units.environment(self.profile, self.owner, self.paths, self.url)
        self.cfg = cfg
        self.token = secrets.token_hex(32)
        #: Seconds from the start to StartTransientUnit's job done, per run_unit().
        self.unit_started: list[float] = []

    def prepare(self) -> None:
        """A fresh private directory and token file, as the spawner makes them."""
        prepare_directory(self.paths, self.owner.uid, self.owner.gid, self.token)

    async def wait_answering(self, start: float) -> float:
        """Poll the socket every 5 ms until /api answers 200; seconds since start."""
        deadline = start + SPAWN_TIMEOUT
        while not await probe(self.paths.socket, self.url + "api", self.token):
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{self.owner.name}: bare server did not answer")
            await asyncio.sleep(0.005)
        return time.perf_counter() - start

    async def run_process(self) -> float:
        """Start it as a plain process of the user (setuid, no unit); seconds to answer."""
        self.prepare()
        start = time.perf_counter()
        proc = subprocess.Popen(
            self.argv, user=self.owner.uid, group=self.owner.gid, extra_groups=[],
            env=dict(e.split("=", 1) for e in self.env), cwd=self.owner.home,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self.res.pgids.add(proc.pid)
        try:
            return await self.wait_answering(start)
        finally:
            kill_group(proc.pid)
            self.res.pgids.discard(proc.pid)
            await asyncio.get_running_loop().run_in_executor(None, proc.wait)

    async def run_unit(self, systemd: Systemd) -> float:
        """Start it as a transient unit with the hub's properties, no hub; seconds to answer."""
        self.prepare()
        unit = f"bench-{units.unit_name(self.owner.name)}"
        self.res.units.add(unit)
        props = units.unit_properties(self.cfg, self.profile, self.owner, self.paths, self.url)
        start = time.perf_counter()
        await systemd.start_transient(unit, props)
        self.unit_started.append(time.perf_counter() - start)
        try:
            return await self.wait_answering(start)
        finally:
            await systemd.stop(unit)
            await systemd.reset_failed(unit)


# --- the benchmark ---------------------------------------------------------------------------

class Figures(dict):
    """Figures by name, printed as they come."""

    def show(self, name: str, text: str, value=None) -> None:
        """Remember value under name and print a line."""
        self[name] = value
        print(f"  {text}", flush=True)


async def proxy_figures(fig: Figures, direct: Target, hub: Target, user: str,
                        procs: dict[str, psutil.Process], quick: bool) -> None:
    """(a)–(d): latency, throughput, download and kernel round trips, direct vs hub."""
    path = f"/user/{user}/api/status"
    n = 500 if quick else 2000
    await wait_for_quiet(procs)
    print(f"(a) GET {path}, concurrency 1, {n} requests each, one keep-alive connection each,"
          " alternating blocks")
    lat = await latency([direct, hub], path, n)
    for t in (direct, hub):
        fig.show(f"lat_{t.name}", f"{t.name:6}: p50 {lat[t.name]['p50']:.3f} ms  "
                 f"p99 {lat[t.name]['p99']:.3f} ms", lat[t.name])
    w1 = wrk(hub.base + path, hub.token, 1, 4 if quick else 8)
    fig.show("lat_wrk", f"hub (wrk -c1): p50 {w1['p50']:.3f} ms  p99 {w1['p99']:.3f} ms", w1)
    seconds, rounds = 4, (1 if quick else 3)
    print(f"(b) same GET, 64 keep-alive connections, {rounds} alternating rounds of {seconds} s")
    runs: dict[str, list[dict]] = {direct.name: [], hub.name: []}
    for _ in range(rounds):
        await wait_for_quiet(procs)
        for t in (direct, hub):
            r = await throughput(t, path, 64, seconds, procs)
            runs[t.name].append(r)
            cpu = "  ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms"].items())
            print(f"    {t.name:6}: {r['rps']:5.0f} req/s   CPU ms/request: {cpu}"
                  f"   other processes: {r['others']:.2f} cores")
    for t in (direct, hub):
        rps = statistics.median(r["rps"] for r in runs[t.name])
        fig.show(f"rps_{t.name}", f"{t.name:6}: median {rps:.0f} req/s", rps)
    ratios = [h["rps"] / d["rps"] for d, h in zip(runs[direct.name], runs[hub.name], strict=True)]
    fig.show("rps_ratio", "hub/direct per round: "
             + " ".join(f"{100 * x:.0f} %" for x in ratios), statistics.median(ratios))
    w64 = wrk(hub.base + path, hub.token, 64, 8)
    fig.show("rps_wrk", f"hub (wrk -c64): {w64['rps']:.0f} req/s  p50 {w64['p50']:.2f} ms  "
             f"p99 {w64['p99']:.2f} ms  non-2xx {w64['errors']}", w64["rps"])
    print(f"(c) 100 MiB GET /user/{user}/files/… (tornado's static file handler), best of 3")
    await wait_for_quiet(procs)
    for t in (direct, hub):
        with PeakRSS(procs["hub"]) as rss:
            secs = min([await download(t, f"/user/{user}/files/bench-100m.bin")
                        for _ in range(3)])
        fig.show(f"dl_{t.name}", f"{t.name:6}: {secs:.3f} s ({DOWNLOAD / secs / 2**20:.0f} MiB/s)"
                 f"   hub peak RSS {rss.peak:.0f} MiB", secs)
    await wait_for_quiet(procs)
    await kernel_figures(fig, direct, hub, user, 50 if quick else 200)


async def kernel_figures(fig: Figures, direct: Target, hub: Target, user: str, n: int) -> None:
    """(d): execute round trips on one kernel, direct and through the hub."""
    print(f"(d) {n} execute_request → execute_reply round trips of `1 + 1`, one kernel")
    async with direct.session() as session:
        async with session.post(f"{direct.base}/user/{user}/api/kernels", json={}) as resp:
            kernel = await resp.json()
        try:
            channels = f"/user/{user}/api/kernels/{kernel['id']}/channels"
            for t in (direct, hub):
                r = await execute_round_trips(t, channels, n)
                fig.show(f"ws_{t.name}", f"{t.name:6}: p50 {r['p50']:.2f} ms  "
                         f"p99 {r['p99']:.2f} ms", r)
        finally:
            async with session.delete(f"{direct.base}/user/{user}/api/kernels/{kernel['id']}"):
                pass


async def spawn_figures(fig: Figures, cfg: config.Config, res: Resources, log: HubLog,
                        hub: Target, user: str, runs: int,
                        procs: dict[str, psutil.Process]) -> None:
    """(e): spawn-to-ready through the API vs the bare server, and vs a unit without the hub."""
    print(f"(e) spawn to ready, {runs} runs each (medians), the three kinds in rotating order,"
          " each on a quiet machine")
    bare = BareServer(cfg, res, user)
    systemd = Systemd()
    await systemd.connect()
    times: dict[str, list[float]] = {"process": [], "unit": [], "api": []}
    marks: dict[str, list[float]] = {"unit_started": [], "ready_logged": []}

    async def api() -> float:
        start = time.perf_counter()
        secs, failure = await api_spawn(hub, user)
        if failure:
            raise RuntimeError(f"API spawn failed: {failure}")
        await asyncio.sleep(0.2)  # let the log reader thread catch up
        for key, pattern in (("unit_started", rf"user={user} started "),
                             ("ready_logged", rf"user={user} server ready")):
            when = log.first(pattern, start)
            marks[key].append((when - start) if when else float("nan"))
        await api_stop(hub, user)
        return secs
    kinds = {"process": bare.run_process, "unit": lambda: bare.run_unit(systemd), "api": api}
    order = list(kinds)
    try:
        await bare.run_process()  # warm-up: page cache, the user's ~/.local
        for i in range(runs):
            for kind in order[i % 3:] + order[:i % 3]:
                await wait_for_quiet(procs, patience=20, quiet=False)
                times[kind].append(await kinds[kind]())
    finally:
        await systemd.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    for key, label in (("process", "bare process (setuid, no unit)"),
                       ("unit", "transient unit, same properties, no hub"),
                       ("api", "through the hub API (POST → ready)")):
        fig.show(f"spawn_{key}", f"{label:42}: median {med[key] * 1000:7.0f} ms   runs "
                 + " ".join(f"{t * 1000:.0f}" for t in times[key]), med[key])
    fig.show("spawn_marks", "hub log, median since POST: StartTransientUnit done "
             f"{statistics.median(marks['unit_started']) * 1000:.0f} ms, ready logged "
             f"{statistics.median(marks['ready_logged']) * 1000:.0f} ms (without the hub: "
             f"StartTransientUnit done {statistics.median(bare.unit_started) * 1000:.0f} ms)",
             marks)


async def burst_figures(fig: Figures, res: Resources, hub: Target, hub_proc: psutil.Process,
                        size: int, log: "HubLog") -> None:
    """(f): `size` new users spawned at once through the API."""
    names = res.make_users("c", size) if size else []
    try:
        rss_before = hub_proc.memory_info().rss / 2**20
        start = time.perf_counter()
        results = await asyncio.gather(*(api_spawn(hub, n) for n in names))
        wall = time.perf_counter() - start
        rss_after = hub_proc.memory_info().rss / 2**20
        ok = sorted(secs for secs, failure in results if not failure)
        failures = {failure for _, failure in results if failure}
        text = (f"N={size}: {len(ok)}/{size} ready, all-ready {max(ok) if ok else 0:.1f} s, "
                f"p50 {pct(ok, 50) if ok else 0:.1f} s, p95 {pct(ok, 95) if ok else 0:.1f} s, "
                f"wall {wall:.1f} s; hub RSS {rss_before:.0f} → {rss_after:.0f} MiB")
        fig.show(f"burst_{size}", text, {"ready": len(ok), "size": size,
                                         "all": max(ok) if ok else None,
                                         "p50": pct(ok, 50) if ok else None,
                                         "p95": pct(ok, 95) if ok else None,
                                         "rss": (rss_before, rss_after)})
        for failure in sorted(failures)[:3]:
            print(f"    failure: {failure}")
        if failures:
            print("    hub log, last lines:")
            for _, line in log.lines[-15:]:
                print(f"      {line.rstrip()}")
    finally:
        await asyncio.gather(*(api_stop(hub, n) for n in names))
        res.remove_users(names)
        print(f"    after stopping them: hub RSS {hub_proc.memory_info().rss / 2**20:.0f} MiB")


def table(fig: Figures) -> None:
    """The compact summary with targets and JupyterHub's reference figures."""
    rows = []
    lat_d, lat_h = fig["lat_direct"], fig["lat_hub"]
    rows.append(("added latency c=1 (p50 / p99)",
                 f"+{lat_h['p50'] - lat_d['p50']:.3f} / +{lat_h['p99'] - lat_d['p99']:.3f} ms",
                 TARGETS["latency"], JUPYTERHUB["latency"]))
    rows.append(("throughput c=64, % of direct",
                 f"{100 * fig['rps_ratio']:.0f} % "
                 f"({fig['rps_hub']:.0f}/{fig['rps_direct']:.0f}/s)",
                 TARGETS["throughput"], JUPYTERHUB["throughput"]))
    rows.append(("100 MiB download hub/direct",
                 f"{fig['dl_hub']:.2f}/{fig['dl_direct']:.2f} s "
                 f"(x{fig['dl_hub'] / fig['dl_direct']:.2f})", "-", "x2 (1 MiB)"))
    rows.append(("kernel execute RTT via hub p50",
                 f"{fig['ws_hub']['p50']:.2f} ms (direct {fig['ws_direct']['p50']:.2f})",
                 TARGETS["kernel"], JUPYTERHUB["kernel"]))
    if "spawn_api" in fig:
        rows.append(("spawn overhead (API - bare proc)",
                     f"{(fig['spawn_api'] - fig['spawn_process']) * 1000:+.0f} ms "
                     f"(API - unit {(fig['spawn_api'] - fig['spawn_unit']) * 1000:+.0f})",
                     TARGETS["spawn"], JUPYTERHUB["spawn"]))
    for key in sorted(k for k in fig if k.startswith("burst_")):
        b = fig[key]
        rows.append((f"simultaneous spawns N={b['size']}",
                     f"{b['ready']}/{b['size']} ready, all in {b['all'] or 0:.1f} s",
                     "all ready", JUPYTERHUB["burst"] if b["size"] == 50 else "-"))
    print("\nfigure                            measured                        target"
          "        JupyterHub")
    for name, measured, target, ref in rows:
        print(f"{name:33} {measured:31} {target:13} {ref}")
    if BACKGROUND:
        print(f"other processes before each measurement: median "
              f"{statistics.median(BACKGROUND):.2f}, max {max(BACKGROUND):.2f} cores "
              f"(of {os.cpu_count()}); figures taken above ~0.3 are noisy")


async def measure(args, res: Resources, cfg_path: Path, log: HubLog, user: str) -> None:
    """Start the user's server, then take every figure."""
    cfg = config.load(cfg_path)
    hub = Target("hub", res.admin_token, port=int(res.hub_base.rsplit(":", 1)[1]))
    secs, failure = await api_spawn(hub, user)
    if failure:
        raise RuntimeError(f"spawn through the API failed: {failure}")
    print(f"setup: {user}'s server ready through the API in {secs:.2f} s (first start)")
    paths = units.ServerPaths.for_user(cfg.hub.runtime_dir, user)
    direct = Target("direct", paths.token_file.read_text().strip(), sock=str(paths.socket))
    main_pid = int(run("systemctl", "show", "-p", "MainPID", "--value", units.unit_name(user)))
    procs = {"hub": psutil.Process(res.hub.pid), "notebook": psutil.Process(main_pid),
             "client": psutil.Process()}
    fig = Figures()
    print(f"cores: {os.cpu_count()}; hub pid {res.hub.pid}, notebook pid {main_pid}")
    await proxy_figures(fig, direct, hub, user, procs, args.quick)
    await api_stop(hub, user)
    procs = {"hub": procs["hub"], "client": procs["client"]}  # the notebook has stopped
    await spawn_figures(fig, cfg, res, log, hub, user, 2 if args.quick else 7, procs)
    print("(f) classroom burst: new users, all POSTed at once, each followed to ready")
    for size in args.burst:
        await wait_for_quiet(procs, patience=30)
        await burst_figures(fig, res, hub, procs["hub"], size, log)
    table(fig)


def parse_args() -> argparse.Namespace:
    """--burst sizes and --quick."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--burst", default="30,50",
                   help="comma-separated sizes of simultaneous spawns ('' for none)")
    p.add_argument("--quick", action="store_true", help="fewer requests and spawn runs")
    args = p.parse_args()
    args.burst = [int(s) for s in args.burst.split(",") if s]
    return args


def main() -> int:
    """Set up, measure, and remove everything whatever happens."""
    args = parse_args()
    if os.geteuid() != 0 or os.environ.get("APPLIANCE_BOOTED_SYSTEMD") != "1":
        print("bench_hub: run as root inside the booted container (make bench)",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.stdout.reconfigure(line_buffering=True)  # figures appear as they come, even in a pipe
    res = Resources()
    try:
        user = res.make_users("b", 1)[0]
        cfg_path = write_config(res, admin=user)
        log = start_hub(res, cfg_path)
        res.admin_token = api_token(cfg_path, user)
        make_download_file(user)
        asyncio.run(measure(args, res, cfg_path, log, user))
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        res.cleanup()
    return 0


def make_download_file(user: str) -> None:
    """A 100 MiB file of random bytes in the user's home, owned by them."""
    entry = pwd.getpwnam(user)
    path = Path(entry.pw_dir) / "bench-100m.bin"
    with path.open("wb") as f:
        block = os.urandom(1024 * 1024)
        for _ in range(DOWNLOAD // len(block)):
            f.write(block)
    os.chown(path, entry.pw_uid, entry.pw_gid)


if __name__ == "__main__":
    sys.exit(main())
