"""Benchmark the proxy: direct-to-notebook vs through the hub. Prints figures, asserts nothing.

Run: /usr/bin/python3 tests/bench/bench_proxy.py
The notebook stand-in is a small aiohttp app served on a UNIX socket (what the hub uses) and on
a TCP port (so wrk can reach it directly); the hub runs in its own process on 127.0.0.1.
"""

import asyncio
import multiprocessing
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiohttp import ClientSession, TCPConnector, UnixConnector, web  # noqa: E402

from appliance.proxy import normalise_user_path, relay  # noqa: E402
from appliance.upstream import Upstream  # noqa: E402
from tests.ports import free_port  # noqa: E402

SMALL = b'{"name": "bench", "type": "directory", "content": null}'
CHUNK = b"x" * (256 * 1024)
DOWNLOAD = 100 * 1024 * 1024
HUB_COOKIES = frozenset({"appliance-session"})


# --- the two servers, each in its own process ----------------------------------------

async def small(request):
    """A small JSON answer, like a contents API call."""
    return web.Response(body=SMALL, content_type="application/json")


async def download(request):
    """Stream `size` bytes."""
    size = int(request.query["size"])
    response = web.StreamResponse(headers={"Content-Length": str(size)})
    await response.prepare(request)
    for _ in range(size // len(CHUNK)):
        await response.write(CHUNK)
    return response


async def ws_echo(request):
    """Echo every text frame."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        await ws.send_str(msg.data)
    return ws


def run_upstream(sock_path: str, port: int) -> None:
    """Serve the notebook stand-in on a UNIX socket and a TCP port."""
    app = web.Application()
    app.router.add_get("/user/bench/small", small)
    app.router.add_get("/user/bench/download", download)
    app.router.add_get("/user/bench/ws", ws_echo)

    async def serve():
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.UnixSite(runner, sock_path).start()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()
    asyncio.run(serve())


async def hub_handler(request):
    """Normalise and relay, as the hub does."""
    _, path = normalise_user_path(request.raw_path.partition("?")[0])
    return await relay(request, request.app["upstream"], path, hub_cookies=HUB_COOKIES)


def run_hub(sock_path: str, port: int) -> None:
    """Serve a minimal hub relaying /user/ to the socket."""
    async def serve():
        app = web.Application()
        app["upstream"] = Upstream(sock_path, "bench-token")
        app.router.add_route("*", "/user/{tail:.*}", hub_handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()
    asyncio.run(serve())



def wait_for_port(port: int) -> None:
    """Block until something listens on port."""
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


# --- measurements --------------------------------------------------------------------

def wrk(url: str, connections: int, seconds: int = 8) -> dict:
    """Run wrk; return requests/s and latency percentiles in ms."""
    out = subprocess.run(
        ["wrk", "-t", "1" if connections == 1 else "2", "-c", str(connections),
         "-d", f"{seconds}s", "--latency", url],
        capture_output=True, text=True, check=True).stdout
    figures = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "99"):
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out).groups()
        figures[f"p{pct}"] = float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    return figures


async def latency_aiohttp(session: ClientSession, url: str, n: int = 3000) -> dict:
    """Sequential GETs with one client; percentiles in ms (fallback and UNIX-socket case)."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        async with session.get(url) as resp:
            await resp.read()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"p50": times[n // 2], "p99": times[int(n * 0.99)]}


async def throughput_aiohttp(url: str, connections: int, seconds: float = 8) -> float:
    """Requests/s from `connections` concurrent loops (fallback without wrk)."""
    done = 0
    deadline = time.perf_counter() + seconds
    async with ClientSession(connector=TCPConnector(limit=connections)) as session:
        async def loop():
            nonlocal done
            while time.perf_counter() < deadline:
                async with session.get(url) as resp:
                    await resp.read()
                done += 1
        await asyncio.gather(*(loop() for _ in range(connections)))
    return done / seconds


async def download_time(session: ClientSession, url: str) -> float:
    """Seconds to fetch DOWNLOAD bytes."""
    start = time.perf_counter()
    async with session.get(url) as resp:
        async for _ in resp.content.iter_any():
            pass
    return time.perf_counter() - start


async def ws_round_trips(session: ClientSession, url: str, n: int = 200) -> float:
    """p50 of n websocket echo round trips, ms."""
    times = []
    async with session.ws_connect(url) as ws:
        for i in range(n):
            start = time.perf_counter()
            await ws.send_str(f'{{"msg_id": {i}, "content": "print(1)"}}')
            await ws.receive_str()
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def measure(sock_path: str, direct: str, hub: str) -> None:
    """Print every figure."""
    have_wrk = shutil.which("wrk") is not None
    print(f"cores: {os.cpu_count()}; load tool: {'wrk' if have_wrk else 'aiohttp client'}")
    async with ClientSession(connector=UnixConnector(sock_path)) as unix_session:
        via_unix = await latency_aiohttp(unix_session, "http://nb/user/bench/small")
    print(f"c=1 latency direct UNIX socket (aiohttp client): p50 {via_unix['p50']:.3f} ms"
          f"  p99 {via_unix['p99']:.3f} ms")
    lat = {}
    for name, base in (("direct TCP", direct), ("through hub", hub)):
        if have_wrk:
            lat[name] = wrk(base + "/user/bench/small", 1)
        else:
            async with ClientSession() as session:
                lat[name] = await latency_aiohttp(session, base + "/user/bench/small")
        print(f"c=1 latency {name:12}: p50 {lat[name]['p50']:.3f} ms"
              f"  p99 {lat[name]['p99']:.3f} ms")
    print(f"added latency p50: {lat['through hub']['p50'] - lat['direct TCP']['p50']:.3f} ms,"
          f" p99: {lat['through hub']['p99'] - lat['direct TCP']['p99']:.3f} ms")
    rps = {}
    for name, base in (("direct TCP", direct), ("through hub", hub)):
        url = base + "/user/bench/small"
        rps[name] = wrk(url, 64)["rps"] if have_wrk else await throughput_aiohttp(url, 64)
        print(f"c=64 throughput {name:12}: {rps[name]:.0f} req/s")
    print(f"hub throughput: {100 * rps['through hub'] / rps['direct TCP']:.0f} % of direct")
    async with ClientSession(auto_decompress=False) as session:
        for name, base in (("direct TCP", direct), ("through hub", hub)):
            secs = await download_time(session, f"{base}/user/bench/download?size={DOWNLOAD}")
            print(f"100 MiB download {name:12}: {secs:.3f} s ({DOWNLOAD / secs / 2**20:.0f} MiB/s)")
        for name, base in (("direct TCP", direct), ("through hub", hub)):
            p50 = await ws_round_trips(session, base.replace("http", "ws") + "/user/bench/ws")
            print(f"websocket echo p50 {name:12}: {p50:.3f} ms (200 round trips)")


def main() -> None:
    """Start both servers, measure, stop them."""
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        sock_path = os.path.join(tmp, "nb.sock")
        up_port, hub_port = free_port(), free_port()
        procs = [ctx.Process(target=run_upstream, args=(sock_path, up_port), daemon=True),
                 ctx.Process(target=run_hub, args=(sock_path, hub_port), daemon=True)]
        for proc in procs:
            proc.start()
        try:
            wait_for_port(up_port)
            wait_for_port(hub_port)
            asyncio.run(measure(sock_path, f"http://127.0.0.1:{up_port}",
                                f"http://127.0.0.1:{hub_port}"))
        finally:
            for proc in procs:
                proc.terminate()
                proc.join()


if __name__ == "__main__":
    main()
