"""The D-Bus client under a classroom burst: a full socket never costs the connection, and a
connection lost anyway heals itself, failing only what was in flight."""

import asyncio
import socket

import pytest

from appliance import systemd as systemd_module
from appliance.systemd import LOST_CONNECTION, Systemd, SystemdError

from .browser import Browser
from .conftest import cli

pytestmark = [pytest.mark.systemd]

#: dbus-next writes queued messages back to back once the socket is writable; EAGAIN comes
#: when a whole message fits and the next one finds the buffer full. Calls of ~1 KiB (a
#: StartTransientUnit is 1-2 KiB) into a shrunken buffer do that within the first few.
BURST_CALLS = 300
PATTERN = "notebook-nothing-" + "x" * 1000 + ".service"


@pytest.fixture
def tiny_send_buffer(monkeypatch):
    """Connections made from now on have a small send buffer and no bound on calls in flight,
    so a burst hits EAGAIN at once, as 150 StartTransientUnit calls did with the real buffer."""
    monkeypatch.setattr(systemd_module, "MAX_CALLS_IN_FLIGHT", 10_000)
    patient = systemd_module._wait_on_full_socket

    def shrink(bus, *, patient_writer=True):
        bus._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        if patient_writer:
            patient(bus)

    return monkeypatch, shrink


async def burst(client: Systemd) -> list:
    """BURST_CALLS ListUnitsByPatterns at once; results or exceptions, in order."""
    calls = [client.list_units(PATTERN) for _ in range(BURST_CALLS)]
    return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 120)


async def test_a_full_socket_buffer_keeps_the_connection(tiny_send_buffer):
    monkeypatch, shrink = tiny_send_buffer
    monkeypatch.setattr(systemd_module, "_wait_on_full_socket", shrink)
    client = Systemd()
    await client.connect()
    try:
        results = await burst(client)
        assert [r for r in results if isinstance(r, Exception)] == []
        assert client.reconnects == 0
    finally:
        await client.close()


async def test_dbus_next_alone_drops_the_connection_and_the_client_heals(tiny_send_buffer):
    """The diagnosis of the 150-user failure: without the workaround the same burst ends
    the connection (python-dbus-next#153); the client then reconnects by itself."""
    monkeypatch, shrink = tiny_send_buffer
    monkeypatch.setattr(systemd_module, "_wait_on_full_socket",
                        lambda bus: shrink(bus, patient_writer=False))
    client = Systemd()
    await client.connect()
    try:
        results = await burst(client)
        errors = [r for r in results if isinstance(r, Exception)]
        assert errors and all(isinstance(e, SystemdError) for e in errors)
        assert any("connection" in str(e) for e in errors), errors[:3]
        for _ in range(100):
            if client.reconnects:
                break
            await asyncio.sleep(0.05)
        assert client.reconnects >= 1
        assert await client.list_units("notebook-nothing.service") == []
    finally:
        await client.close()


async def test_connection_lost_mid_burst_fails_only_what_was_in_flight(
        start_hub, hub_config, make_user):
    users = [make_user() for _ in range(6)]
    cfg = hub_config()
    hub = await start_hub(cfg)
    spawner = hub.app["spawner"]
    tokens = {u.name: cli(cfg, "token", u.name) for u in users}

    async def start(name: str) -> list[dict]:
        async with Browser(hub, token=tokens[name]) as api:
            async with api.request("POST", f"/hub/api/users/{name}/server") as r:
                if r.status >= 500:  # it failed within the POST's own wait: said there
                    return [{"failed": True, "message": (await r.json())["message"]}]
                assert r.status in (201, 202), await r.text()
            return await api.progress(name)

    runs = [asyncio.create_task(start(u.name)) for u in users]
    await asyncio.sleep(0.3)  # the spawns are under way: their systemd calls are in flight
    spawner.systemd.drop_connection()
    outcomes = await asyncio.wait_for(asyncio.gather(*runs), 240)

    assert spawner.systemd.reconnects == 1
    failed = [u.name for u, events in zip(users, outcomes, strict=True)
              if not events[-1].get("ready")]
    for events in outcomes:
        last = events[-1]
        assert last.get("ready") or last.get("failed"), events  # nobody left waiting
        if last.get("failed"):
            assert LOST_CONNECTION in last["message"], last
    assert all(spawner.get(u.name).state in ("running", "stopped") for u in users)

    # Those that failed start now, on the new connection, and every server answers.
    again = await asyncio.wait_for(asyncio.gather(*(start(n) for n in failed)), 240)
    assert all(events[-1].get("ready") for events in again), again
    async with Browser(hub, token=tokens[users[0].name]) as api:
        assert await api.execute(users[0].name, "6*7") == "42"
