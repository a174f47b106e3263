"""Password guessing against the real hub in a booted systemd (issue 8, part 3); prints figures.

Run inside the nspawn container (as root), e.g. `make login-flood`, or:
  tests/infra/nspawn.sh "$(tests/infra/rootfs.sh)" . \
      env PYTHONPATH=/src python3 /src/tests/bench/login_flood.py [--flood 400] [--wrong 50]

A logged-in user (an API token, and a running server) is timed with `GET /hub/api/user` and
a proxied `GET /user/<name>/api/status` before and during a flood of `--flood` concurrent
bad logins from one client address (wrong passwords for real accounts, round robin); fresh
tokens, each used once, time the account look-up a cache miss makes. Then `--wrong`
wrong passwords for one user, all at once and one by one, each from its own address: how
many reached PAM (the hub logs each PAM refusal). The hub trusts X-Forwarded-For from
loopback here, so the load generator can be several clients. No asserts: figures only.
"""

import argparse
import asyncio
import collections
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp  # noqa: E402

from tests.bench.bench_hub import (  # noqa: E402
    HubLog,
    Resources,
    Target,
    api_spawn,
    api_stop,
    api_token,
    pct,
    start_hub,
    write_config,
)

FLOOD_CLIENT = "198.51.100.1"
PROBE_INTERVAL = 0.02


def trusting_config(res: Resources, user: str) -> Path:
    """bench_hub's config, with loopback as a trusted proxy (one process, many clients)."""
    path = write_config(res, admin=user)
    text = path.read_text().replace("[auth]\n", 'trusted_proxies = ["127.0.0.1"]\n[auth]\n', 1)
    path.write_text(text)
    return path


class LoginClient:
    """A browser-like session that can post the login form as any client address."""

    def __init__(self, base: str):
        self.base = base
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=600))
        self.xsrf = ""

    async def open(self) -> "LoginClient":
        """GET the login page once for the CSRF cookie."""
        async with self.session.get(f"{self.base}/hub/login") as r:
            await r.read()
        self.xsrf = next(c.value for c in self.session.cookie_jar if c.key == "appliance-xsrf")
        return self

    async def attempt(self, name: str, password: str, client: str) -> tuple[int, float]:
        """POST the form; (status, seconds)."""
        start = time.perf_counter()
        async with self.session.post(
                f"{self.base}/hub/login", allow_redirects=False,
                headers={"X-Forwarded-For": client},
                data={"_xsrf": self.xsrf, "username": name, "password": password}) as r:
            await r.read()
            return r.status, time.perf_counter() - start

    async def close(self) -> None:
        """Close the session."""
        await self.session.close()


async def probe(hub: Target, user: str, stop: asyncio.Event, out: dict) -> None:
    """Alternate GET /hub/api/user and the proxied status until stop; ms per path."""
    paths = {"/hub/api/user": "hub api", f"/user/{user}/api/status": "proxied status"}
    async with hub.session() as session:
        while not stop.is_set():
            for path, name in paths.items():
                start = time.perf_counter()
                async with session.get(f"{hub.base}{path}") as r:
                    await r.read()
                    if r.status != 200:
                        out.setdefault("errors", []).append(f"{path}: {r.status}")
                out.setdefault(name, []).append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(PROBE_INTERVAL)


async def cache_misses(hub: Target, tokens: list[str], out: dict) -> None:
    """Each fresh token once, spread over the flood: an account look-up each."""
    for token in tokens:
        t = Target("miss", token, port=hub.port)
        async with t.session() as session:
            start = time.perf_counter()
            async with session.get(f"{hub.base}/hub/api/user") as r:
                await r.read()
            out.setdefault("lookup (cache miss)", []).append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(0.2)


async def probed(hub: Target, user: str, seconds: float, during=None,
                 fresh: list[str] = ()) -> dict:
    """Probe for `seconds`, or for as long as the coroutine `during` runs; ms lists."""
    out: dict = {}
    stop = asyncio.Event()
    task = asyncio.create_task(probe(hub, user, stop, out))
    misses = asyncio.create_task(cache_misses(hub, list(fresh), out))
    result = await during if during is not None else await asyncio.sleep(seconds)
    stop.set()
    await task
    await misses
    out["result"] = result
    return out


def pam_reached(log: HubLog, name: str, since: float) -> int:
    """Logins for name that reached PAM since perf_counter() `since` (one line each)."""
    return sum(1 for t, line in list(log.lines)
               if t > since and "by PAM" in line and f"user={name!r}" in line)


async def flood(base: str, targets: list[str], n: int) -> dict:
    """n concurrent wrong-password logins from one address, round robin over targets."""
    client = await LoginClient(base).open()
    try:
        start = time.perf_counter()
        results = await asyncio.gather(*(
            client.attempt(targets[i % len(targets)], f"wrong-{i}", FLOOD_CLIENT)
            for i in range(n)))
        return {"seconds": time.perf_counter() - start,
                "statuses": dict(collections.Counter(s for s, _ in results)),
                "p99 answer s": pct([t for _, t in results], 99)}
    finally:
        await client.close()


async def wrong_passwords(base: str, name: str, n: int, log: HubLog, together: bool,
                          client: str) -> dict:
    """n wrong passwords for one user from one address, at once or one by one."""
    login = await LoginClient(base).open()
    since = time.perf_counter()
    try:
        attempts = (login.attempt(name, f"wrong-{i}", client) for i in range(n))
        if together:
            results = await asyncio.gather(*attempts)
        else:
            results = [await a for a in attempts]
    finally:
        await login.close()
    await asyncio.sleep(0.5)  # the hub's last log lines
    return {"statuses": dict(collections.Counter(s for s, _ in results)),
            "reached PAM": pam_reached(log, name, since)}


def show(title: str, figures: dict) -> None:
    """p50/p99 (ms) of each probed path, and the rest as it is."""
    print(f"\n{title}")
    for key, value in figures.items():
        if isinstance(value, list) and value and isinstance(value[0], float):
            print(f"  {key:<22} n={len(value):<5} p50={pct(value, 50):8.1f} ms "
                  f"p99={pct(value, 99):8.1f} ms  max={max(value):8.1f} ms")
        else:
            print(f"  {key:<22} {value}")


async def measure(args, res: Resources, cfg_path: Path, log: HubLog, user: str,
                  targets: list[str], victim: str) -> None:
    """Baseline, flood, then the wrong passwords for one user."""
    port = int(res.hub_base.rsplit(":", 1)[1])
    hub = Target("hub", api_token(cfg_path, user), port=port)
    took, failure = await api_spawn(hub, user)
    print(f"{user}'s server started in {took:.1f} s {failure}")
    fresh = [api_token(cfg_path, user) for _ in range(args.misses * 2)]
    show("logged-in user, no flood", await probed(hub, user, args.baseline,
                                                   fresh=fresh[:args.misses]))
    since = time.perf_counter()
    during = await probed(hub, user, 0, during=flood(res.hub_base, targets, args.flood),
                          fresh=fresh[args.misses:])
    during["reached PAM"] = sum(pam_reached(log, t, since) for t in targets)
    show(f"logged-in user during {args.flood} concurrent bad logins from one address",
         during)
    for together in (True, False):
        client = "198.51.100.2" if together else "198.51.100.3"
        figures = await wrong_passwords(res.hub_base, victim, args.wrong, log, together, client)
        show(f"{args.wrong} wrong passwords for one user, "
             f"{'all at once' if together else 'one by one'}", figures)
    await api_stop(hub, user)


def parse_args() -> argparse.Namespace:
    """Sizes of the flood and of the wrong passwords."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flood", type=int, default=400, help="concurrent bad logins")
    p.add_argument("--targets", type=int, default=20, help="accounts the flood guesses at")
    p.add_argument("--wrong", type=int, default=50, help="wrong passwords for one user")
    p.add_argument("--baseline", type=float, default=10.0, help="seconds probed before")
    p.add_argument("--misses", type=int, default=10, help="fresh tokens used per phase")
    return p.parse_args()


def main() -> int:
    """Set up, measure, and remove everything whatever happens."""
    args = parse_args()
    if os.geteuid() != 0 or os.environ.get("APPLIANCE_BOOTED_SYSTEMD") != "1":
        print("login_flood: run as root inside the booted container (make login-flood)",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.stdout.reconfigure(line_buffering=True)
    res = Resources()
    try:
        user, victim = res.make_users("lf", 2)
        targets = res.make_users("lt", args.targets)
        cfg_path = trusting_config(res, user)
        log = start_hub(res, cfg_path)
        res.admin_token = api_token(cfg_path, user)
        asyncio.run(measure(args, res, cfg_path, log, user, targets, victim))
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        res.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
