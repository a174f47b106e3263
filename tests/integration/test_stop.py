"""A hub that is stopped (restart, upgrade) answers what it already accepted and ends quickly.

The real `notebook-appliance serve` runs as its own process and gets SIGTERM, as systemd sends.
"""

import asyncio
import signal
import subprocess

import aiohttp
import pytest

from appliance import units
from tests.ports import free_port

from .conftest import booted, cli

pytestmark = [pytest.mark.systemd, pytest.mark.pam]


async def test_a_request_sent_late_on_an_accepted_connection_is_still_answered(hub_config,
                                                                                serve_hub):
    cfg = hub_config(hub={"port": free_port()})
    hub = await serve_hub(cfg)
    reader, writer = await asyncio.open_connection("127.0.0.1", cfg.hub.port)
    await asyncio.sleep(0.5)  # the hub has accepted it; the client is slow to send
    hub.send_signal(signal.SIGTERM)
    await asyncio.sleep(2.0)  # a loaded machine: the request comes seconds after the connect
    writer.write(b"GET /hub/api HTTP/1.1\r\nHost: box\r\nConnection: close\r\n\r\n")
    reply = await asyncio.wait_for(reader.read(), timeout=30)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert b'"version"' in reply
    assert await asyncio.get_running_loop().run_in_executor(None, hub.wait, 40) == 0


async def test_a_silent_connection_does_not_keep_the_hub_from_stopping(hub_config, serve_hub):
    cfg = hub_config(hub={"port": free_port()})
    hub = await serve_hub(cfg)
    reader, writer = await asyncio.open_connection("127.0.0.1", cfg.hub.port)
    hub.send_signal(signal.SIGTERM)
    # Closed unanswered once the grace is over, and the hub exits cleanly.
    assert await asyncio.wait_for(reader.read(), timeout=30) == b""
    writer.close()
    assert await asyncio.get_running_loop().run_in_executor(None, hub.wait, 40) == 0


@pytest.mark.skipif(not booted(), reason="creates users; only in the throwaway container")
async def test_an_open_progress_stream_ends_when_the_hub_stops(hub_config, serve_hub, make_user):
    alice = make_user()
    # A server that never answers: its spawn stays pending, so only the stop can end the stream.
    cfg = hub_config(hub={"port": free_port()},
                     spawner={"command": ["python3", "-c", "import time; time.sleep(600)"],
                              "start_timeout": "5m"})
    hub = await serve_hub(cfg)
    token = cli(cfg, "token", alice.name)
    base = f"http://127.0.0.1:{cfg.hub.port}/hub/api/users/{alice.name}/server"
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as api:
            async with api.post(base) as r:
                assert r.status == 202, await r.text()
            async with api.get(base + "/progress") as r:
                assert r.status == 200
                first = await r.content.readline()
                assert first.startswith(b"data: ")
                hub.send_signal(signal.SIGTERM)
                rest = await asyncio.wait_for(r.content.read(), timeout=12)
        assert b'"ready": true' not in rest and b'"failed": true' not in rest
        # It ended because the hub stopped, well before the 15 s aiohttp would wait for it.
        assert await asyncio.get_running_loop().run_in_executor(None, hub.wait, 12) == 0
    finally:
        subprocess.run(["systemctl", "stop", units.unit_name(alice.name)], capture_output=True)
