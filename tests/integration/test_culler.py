"""The built-in culler (issue 7, part 3) with short timeouts, against real Jupyter servers:
an idle server is stopped and its owner told why; a busy kernel, a busy websocket and an
exempt user are not."""

import asyncio
import logging
import uuid

import pytest

from .browser import Browser, execute_request
from .conftest import cli
from .test_hub import wait_for

pytestmark = [pytest.mark.systemd, pytest.mark.pam]

IDLE = 4.0
CULLER = {"idle_timeout": f"{IDLE:g}s", "every": "1s"}


async def started(hub, cfg, user) -> Browser:
    """A token client for user whose server is ready (close it when done)."""
    api = Browser(hub, token=cli(cfg, "token", user.name))
    async with api.request("POST", f"/hub/api/users/{user.name}/server") as r:
        assert r.status in (201, 202), await r.text()
    assert (await api.progress(user.name))[-1]["ready"]
    return api


async def test_an_idle_server_is_stopped_and_its_owner_told(start_hub, hub_config, make_user):
    alice = make_user()
    cfg = hub_config(culler=CULLER)
    hub = await start_hub(cfg)
    spawner = hub.app["spawner"]
    async with await started(hub, cfg, alice), Browser(hub) as a:
        await wait_for(lambda: spawner.get(alice.name).state == "stopped", timeout=IDLE + 20)
        await a.login(alice.name, alice.password)
        async with a.request("GET", "/hub/home") as r:
            page = await r.text()
    assert "stopped after 4 seconds without activity; your files are kept" in page


async def test_busy_kernel_busy_websocket_and_exempt_user_are_kept(start_hub, hub_config,
                                                                    make_user, caplog):
    caplog.set_level(logging.INFO, logger="appliance")  # who stopped what, if this fails
    computing, chatting, teacher = make_user(), make_user(), make_user()
    cfg = hub_config(culler={**CULLER, "users_exempt": [teacher.name]})
    hub = await start_hub(cfg)
    spawner = hub.app["spawner"]
    apis = []
    try:
        # Each starts working the moment their server is ready (spawns can take longer than
        # the idle timeout on a loaded machine): a long computation, whose kernel is busy
        # and says nothing for 6 idle timeouts...
        apis.append(await started(hub, cfg, computing))
        long_run = asyncio.create_task(apis[0].execute(
            computing.name, f"import time; time.sleep({6 * IDLE}); 'done'"))
        # ...and a student working over an open kernel websocket, a message a second.
        apis.append(await started(hub, cfg, chatting))
        chat = asyncio.create_task(keep_talking(apis[1], chatting.name, 6 * IDLE))
        apis.append(await started(hub, cfg, teacher))
        await asyncio.sleep(3 * IDLE)
        states = {u.name: spawner.get(u.name).state for u in (computing, chatting, teacher)}
        assert set(states.values()) == {"running"}, states
        assert await long_run == "'done'"
        await chat
        # Once all is quiet, the culler does its work (the teacher is left alone).
        await wait_for(lambda: spawner.get(computing.name).state == "stopped", IDLE + 20)
        await wait_for(lambda: spawner.get(chatting.name).state == "stopped", IDLE + 20)
        assert spawner.get(teacher.name).state == "running"
    finally:
        for api in apis:
            await api.session.close()


async def keep_talking(api: Browser, name: str, seconds: float) -> None:
    """Open one kernel websocket and send a small execute request every second."""
    async with api.request("POST", f"/user/{name}/api/kernels", json={}) as r:
        kernel = (await r.json())["id"]
    url = api.url(f"/user/{name}/api/kernels/{kernel}/channels")
    async with api.session.ws_connect(url) as ws:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            await ws.send_json(execute_request(uuid.uuid4().hex, "1 + 1"))
            await asyncio.sleep(1.0)
        await ws.close()
    async with api.request("DELETE", f"/user/{name}/api/kernels/{kernel}"):
        pass


async def test_home_says_when_an_idle_server_will_be_stopped(start_hub, hub_config, make_user):
    alice = make_user()
    cfg = hub_config(culler={"idle_timeout": "1h", "every": "5m"})
    hub = await start_hub(cfg)
    async with await started(hub, cfg, alice), Browser(hub) as a:
        await a.login(alice.name, alice.password)
        async with a.request("GET", "/hub/home") as r:
            page = await r.text()
    assert "If you leave it idle, it will be stopped in about 60 minutes" in page


async def test_a_slow_upload_keeps_its_server(start_hub, hub_config, make_user):
    """A request in flight is use: an upload that takes three idle timeouts to arrive (a
    student on a slow link) is not cut off by the culler."""
    alice = make_user()
    cfg = hub_config(culler=CULLER)
    hub = await start_hub(cfg)
    spawner = hub.app["spawner"]

    async def slowly():
        yield b'{"type": "file", "format": "text", "content": "'
        for _ in range(int(3 * IDLE)):
            await asyncio.sleep(1.0)
            yield b"x" * 1024
        yield b'"}'

    async with await started(hub, cfg, alice) as api:
        async with api.request("PUT", f"/user/{alice.name}/api/contents/upload.txt",
                               data=slowly(),
                               headers={"Content-Type": "application/json"}) as r:
            assert r.status in (200, 201), await r.text()
        assert spawner.get(alice.name).state == "running", "culled mid-upload"
