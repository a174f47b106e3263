"""The spawn queue on a booted systemd: order, places on the progress stream, memory admission."""

import asyncio
import secrets

import pytest

from .browser import Browser
from .conftest import cli

pytestmark = [pytest.mark.systemd, pytest.mark.pam]


async def post_then_follow(hub, token: str, name: str) -> list[dict]:
    """POST the user's server (the reply may come before or after ready), follow progress."""
    async with Browser(hub, token=token) as api:
        post = asyncio.create_task(api.session.post(api.url(f"/hub/api/users/{name}/server")))
        await asyncio.sleep(0.2)  # the hub has the start before we ask for its progress
        events = await api.progress(name)
        response = await post
        assert response.status in (201, 202), await response.text()
        response.release()
        return events


async def test_ten_starts_two_slots_all_ready_in_order(start_hub, hub_config, make_user):
    users = [make_user() for _ in range(10)]
    cfg = hub_config(spawner={"concurrent_spawns": 2})
    hub = await start_hub(cfg)
    tokens = {u.name: cli(cfg, "token", u.name) for u in users}
    runs = []
    for u in users:  # arrival order is the list order
        runs.append(asyncio.create_task(post_then_follow(hub, tokens[u.name], u.name)))
        # All ten arrive within 0.1 s, before the first launch can end (a server takes at
        # least 0.3 s of CPU to start): with 0.05 s gaps, a lean server was ready before the
        # last one arrived, and it saw 7 ahead instead of 8.
        await asyncio.sleep(0.01)
    outcomes = await asyncio.wait_for(asyncio.gather(*runs), 300)

    assert all(events[-1].get("ready") for events in outcomes), [e[-1] for e in outcomes]
    places = [[e["queue_position"] for e in events if "queue_position" in e]
              for events in outcomes]
    assert places[:2] == [[], []]  # two slots: the first two never wait
    for i, seen in enumerate(places[2:], start=1):
        assert seen == list(range(i, 0, -1)), (i, seen)
    assert places[-1] == [8, 7, 6, 5, 4, 3, 2, 1]
    words = [e["message"] for e in outcomes[-1] if "queue_position" in e]
    assert words[0].startswith("You are 8th in line; about "), words


@pytest.fixture
async def small_slice(start_hub):
    """A slice whose MemoryMax is 1 GiB, made over D-Bus for this test and stopped after."""
    from appliance.systemd import Systemd

    name = f"appliance-test-{secrets.token_hex(4)}.slice"
    client = Systemd()
    await client.connect()
    await client.start_transient(name, [("MemoryMax", "t", 2**30)])
    yield name
    await client.stop(name)
    await client.close()


async def test_a_start_that_does_not_fit_waits_until_another_server_stops(
        start_hub, hub_config, make_user, small_slice):
    alice, bob = make_user(), make_user()
    cfg = hub_config(spawner={"slice": small_slice, "admission": "limits"},
                     limits={"memory": "768M"})
    hub = await start_hub(cfg)
    async with Browser(hub, token=cli(cfg, "token", alice.name)) as a, \
            Browser(hub, token=cli(cfg, "token", bob.name)) as b:
        events = await post_then_follow(hub, cli(cfg, "token", alice.name), alice.name)
        assert events[-1].get("ready"), events

        bob_run = asyncio.create_task(post_then_follow(hub, cli(cfg, "token", bob.name),
                                                       bob.name))
        await asyncio.sleep(3)
        assert not bob_run.done()  # 768M + 768M does not fit in the 1 GiB slice
        async with b.request("GET", f"/hub/api/users/{bob.name}") as r:
            assert (await r.json())["pending"] == "spawn"

        async with a.request("DELETE", f"/hub/api/users/{alice.name}/server") as r:
            assert r.status == 204
        events = await asyncio.wait_for(bob_run, 120)
        assert events[-1].get("ready"), events
        waiting = [e["message"] for e in events if "queue_position" in e]
        assert waiting and waiting[0].startswith("Waiting for memory: 768 MiB of 1 GiB"), waiting


async def test_a_server_bigger_than_the_slice_fails_at_once(
        start_hub, hub_config, make_user, small_slice):
    alice = make_user()
    cfg = hub_config(spawner={"slice": small_slice}, limits={"memory": "2G"})
    hub = await start_hub(cfg)
    async with Browser(hub, token=cli(cfg, "token", alice.name)) as api:
        async with api.request("POST", f"/hub/api/users/{alice.name}/server") as r:
            body = await r.json()
        assert r.status == 500, body
        assert "needs 2 GiB" in body["message"] and "1 GiB" in body["message"], body


async def test_a_start_cancelled_in_line_ends_its_progress_and_frees_its_place(
        start_hub, hub_config, make_user):
    alice, bob, carol = make_user(), make_user(), make_user()
    slow = ["sh", "-c", 'sleep 3; exec jupyter-notebook "$@"', "sh"]
    cfg = hub_config(spawner={"concurrent_spawns": 1, "command": slow})
    hub = await start_hub(cfg)
    tokens = {u.name: cli(cfg, "token", u.name) for u in (alice, bob, carol)}
    first = asyncio.create_task(post_then_follow(hub, tokens[alice.name], alice.name))
    await asyncio.sleep(0.3)
    second = asyncio.create_task(post_then_follow(hub, tokens[bob.name], bob.name))
    await asyncio.sleep(0.3)
    third = asyncio.create_task(post_then_follow(hub, tokens[carol.name], carol.name))
    await asyncio.sleep(0.5)
    async with Browser(hub, token=tokens[bob.name]) as b:
        async with b.request("DELETE", f"/hub/api/users/{bob.name}/server") as r:
            assert r.status == 204
        events = await asyncio.wait_for(second, 30)
        assert events[-1].get("failed") and "cancelled" in events[-1]["message"], events
        async with b.request("GET", f"/hub/api/users/{bob.name}") as r:
            assert (await r.json())["servers"] == {}
    # carol moved up into bob's place and starts after alice.
    outcomes = await asyncio.wait_for(asyncio.gather(first, third), 120)
    assert all(events[-1].get("ready") for events in outcomes), outcomes
    assert [e["queue_position"] for e in outcomes[1] if "queue_position" in e] == [2, 1]
