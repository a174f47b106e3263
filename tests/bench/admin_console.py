"""The admin page with a classroom running: N servers up, then the page's render time, the
live stream's cost in hub CPU per second and bytes per update, and the hub's RSS. Figures,
never asserts.

Run inside the booted container (as root): `make admin-bench` or
  tests/infra/nspawn.sh "$(tests/infra/rootfs.sh)" . \\
      env PYTHONPATH=/src python3 /src/tests/bench/admin_console.py --servers 150
"""

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp  # noqa: E402
import psutil  # noqa: E402

from tests.bench.bench_hub import (  # noqa: E402
    Resources,
    api_token,
    pct,
    start_hub,
    write_config,
)

STREAM_SECONDS = 30.0


async def start_servers(base: str, token: str, names: list[str], at_once: int = 20) -> int:
    """Start every server through the API (the admin's token), at_once in flight; how many
    became ready."""
    gate = asyncio.Semaphore(at_once)
    headers = {"Authorization": f"token {token}"}
    timeout = aiohttp.ClientTimeout(total=900)

    async def one(http: aiohttp.ClientSession, name: str) -> bool:
        async with gate:
            async with http.post(f"{base}/hub/api/users/{name}/server") as r:
                if r.status not in (201, 202):
                    return False
            async with http.get(f"{base}/hub/api/users/{name}/server/progress") as r:
                async for line in r.content:
                    if b'"ready": true' in line:
                        return True
            return False

    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
        return sum(await asyncio.gather(*(one(http, n) for n in names)))


async def render_times(base: str, token: str, count: int = 20) -> tuple[list[float], int]:
    """Seconds per GET /hub/admin (sorted by memory, as a teacher looks), and its size."""
    headers = {"Authorization": f"token {token}"}
    times, size = [], 0
    async with aiohttp.ClientSession(headers=headers) as http:
        for _ in range(count):
            began = time.perf_counter()
            async with http.get(f"{base}/hub/admin?sort=memory&order=desc") as r:
                size = len(await r.read())
                assert r.status == 200, r.status
            times.append(time.perf_counter() - began)
    return times, size


def cpu(process: psutil.Process) -> float:
    """The process's CPU seconds so far."""
    t = process.cpu_times()
    return t.user + t.system


async def stream_cost(base: str, token: str, hub: psutil.Process,
                      watchers: int) -> tuple[float, float, int, float]:
    """(hub CPU s/s while idle, while `watchers` follow the stream, updates seen, mean bytes
    per update)."""
    before = cpu(hub)
    await asyncio.sleep(STREAM_SECONDS)
    idle = (cpu(hub) - before) / STREAM_SECONDS
    sizes: list[int] = []
    stop = asyncio.Event()

    async def follow() -> None:
        headers = {"Authorization": f"token {token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.get(f"{base}/hub/admin/stream") as r:
                while not stop.is_set():
                    line = await r.content.readline()
                    if line.startswith(b"data: "):
                        sizes.append(len(line))

    tasks = [asyncio.create_task(follow()) for _ in range(watchers)]
    before = cpu(hub)
    await asyncio.sleep(STREAM_SECONDS)
    busy = (cpu(hub) - before) / STREAM_SECONDS
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return idle, busy, len(sizes), statistics.mean(sizes) if sizes else 0.0


async def main(servers: int, watchers: int) -> None:
    res = Resources()
    try:
        admin = res.make_users("a", 1)[0]
        cfg_path = write_config(res, admin=admin)
        start_hub(res, cfg_path)
        token = api_token(cfg_path, admin)
        res.admin_token = token
        hub = psutil.Process(res.hub.pid)
        students = res.make_users("s", servers)
        began = time.perf_counter()
        ready = await start_servers(res.hub_base, token, students)
        print(f"{ready}/{servers} servers ready in {time.perf_counter() - began:.1f} s")
        await asyncio.sleep(15)  # a few sampler rounds, so every row has its numbers
        times, size = await render_times(res.hub_base, token)
        print(f"GET /hub/admin ({servers + 1} users, {size / 1024:.0f} KiB): "
              f"p50 {statistics.median(times) * 1000:.0f} ms, "
              f"p95 {pct(times, 95) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")
        rss = hub.memory_info().rss
        idle, busy, updates, mean = await stream_cost(res.hub_base, token, hub, watchers)
        print(f"hub CPU: {idle:.3f} s/s with no page open, {busy:.3f} s/s with {watchers} "
              f"admin page(s) following the stream ({updates} updates of {mean / 1024:.1f} "
              f"KiB in {STREAM_SECONDS:.0f} s)")
        print(f"hub RSS: {rss / 2**20:.0f} MiB with {ready} servers, "
              f"{hub.memory_info().rss / 2**20:.0f} MiB after the stream")
    finally:
        res.stop_servers(list(res.users))
        res.cleanup()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--servers", type=int, default=150)
    p.add_argument("--watchers", type=int, default=1)
    args = p.parse_args()
    asyncio.run(main(args.servers, args.watchers))
