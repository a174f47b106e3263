"""The user units (issue 8, part 6), from inside a real server's kernel: other users'
processes are invisible, /tmp is a capped tmpfs, denied addresses cannot be reached; odd
account names (all digits, non-ASCII) run as themselves and are reachable."""

import asyncio
import pwd
import secrets
from pathlib import Path

import pytest

from .browser import Browser
from .test_hub import spawn_via_form

pytestmark = [pytest.mark.systemd, pytest.mark.pam]


async def listen(host: str) -> tuple[asyncio.AbstractServer, int, list]:
    """A TCP listener that records who connected."""
    seen = []

    async def on_connect(reader, writer):
        seen.append(writer.get_extra_info("peername"))
        writer.close()

    server = await asyncio.start_server(on_connect, host, 0)
    return server, server.sockets[0].getsockname()[1], seen


CONNECT = """
import socket
def attempt(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
        return "connected"
    except OSError as e:
        return type(e).__name__
"""


async def test_a_server_sees_no_other_processes_and_has_a_capped_tmp(start_hub, hub_config,
                                                                     make_user):
    alice = make_user()
    hub = await start_hub(hub_config(spawner={"tmp_size": "16M"}))
    async with Browser(hub) as a:
        await a.login(alice.name, alice.password)
        assert (await spawn_via_form(a, alice.name))[-1]["ready"]
        run = a.execute
        # ProtectProc=invisible: pid 1 (root's) and the hub are not there.
        assert await run(alice.name, "import os; os.path.exists('/proc/1')") == "False"
        owners = await run(alice.name, "import os; sorted({os.stat(f'/proc/{p}').st_uid "
                                       "for p in os.listdir('/proc') if p.isdigit()})")
        assert owners == f"[{pwd.getpwnam(alice.name).pw_uid}]"
        # A capped tmpfs: 20 MiB into a 16 MiB /tmp fails with ENOSPC, nothing reaches disk.
        fill = ("import errno\ntry:\n    open('/tmp/big', 'wb').write(b'x' * (20 << 20))\n"
                "    r = 'written'\nexcept OSError as e:\n    r = errno.errorcode[e.errno]\n"
                "import os; os.unlink('/tmp/big'); r")
        assert await run(alice.name, fill) == "'ENOSPC'"


@pytest.mark.skipif(not Path("/sys/fs/cgroup/cgroup.controllers").exists(),
                    reason="IPAddressDeny= needs cgroup v2 (BPF), and this machine's cgroups "
                           "are v1; the VM tier checks 169.254.169.254 on Debian's own")
async def test_a_server_cannot_reach_a_denied_address(start_hub, hub_config, make_user):
    alice = make_user()
    # 127.0.0.2 stands in for 169.254.169.254: the same rule, on an address this container
    # can listen on (its network is the host's; link-local is the default, checked in units).
    hub = await start_hub(hub_config(spawner={"ip_address_deny": ["127.0.0.2/32"]}))
    denied, denied_port, denied_seen = await listen("127.0.0.2")
    allowed, allowed_port, allowed_seen = await listen("127.0.0.1")
    try:
        async with Browser(hub) as a:
            await a.login(alice.name, alice.password)
            assert (await spawn_via_form(a, alice.name))[-1]["ready"]
            code = CONNECT + f"(attempt('127.0.0.2', {denied_port}), " \
                             f"attempt('127.0.0.1', {allowed_port}))"
            assert await a.execute(alice.name, code) == "('PermissionError', 'connected')"
            assert denied_seen == [] and len(allowed_seen) == 1
    finally:
        for server in (denied, allowed):
            server.close()


@pytest.mark.parametrize("kind", ["digits", "non-ascii"])
async def test_odd_names_run_as_themselves_and_are_reachable(start_hub, make_user, kind):
    """An all-digit name is not read as a uid (User= gets the uid itself); a non-ASCII name
    gets a percent-encoded base URL that its server and the hub's proxy agree on."""
    suffix = secrets.randbelow(10**4)
    name = f"{60000 + suffix}" if kind == "digits" else f"émile{suffix}"
    odd = make_user(name=name)
    hub = await start_hub()
    async with Browser(hub) as a:
        r = await a.login(odd.name, odd.password)
        assert r.status == 302 and r.headers["Location"] == "/hub/home", r.status
        assert (await spawn_via_form(a, odd.name))[-1]["ready"]
        uid = await a.execute(odd.name, "import os; os.getuid()")
        assert uid == str(pwd.getpwnam(odd.name).pw_uid) != name
        async with a.request("GET", f"/user/{odd.name}/api/status") as r:
            assert r.status == 200, await r.text()
