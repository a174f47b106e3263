"""The D-Bus client against the booted systemd, with JobRemoved signals lost on purpose."""

import asyncio
import secrets

import pytest

from appliance import systemd as systemd_module
from appliance.errors import SystemdError
from appliance.systemd import Systemd

pytestmark = [pytest.mark.systemd]


@pytest.fixture
async def lossy_systemd(monkeypatch):
    """A connected client that never hears JobRemoved (fault injection), checking every 0.2 s."""
    monkeypatch.setattr(systemd_module, "JOB_CHECK_SECONDS", 0.2)
    client = Systemd()
    await client.connect()
    monkeypatch.setattr(client, "_on_job_removed", lambda unit, result: None)
    yield client
    await client.close()


async def test_start_and_stop_finish_when_job_removed_is_lost(lossy_systemd):
    name = f"appliance-test-{secrets.token_hex(4)}.service"
    sleep = ["/bin/sleep", "300"]
    try:
        await asyncio.wait_for(lossy_systemd.start_transient(
            name, [("ExecStart", "a(sasb)", [[sleep[0], sleep, False]])]), timeout=30)
        assert (await lossy_systemd.state(name)).active_state in ("active", "activating")
        await asyncio.wait_for(lossy_systemd.stop(name), timeout=30)
        assert (await lossy_systemd.state(name)).active_state == "inactive"
    finally:
        await lossy_systemd.stop(name)


async def test_a_stop_that_cancels_a_pending_start_gets_its_own_result():
    """JobRemoved is matched by job, not by unit: the start's 'canceled' is the start's."""
    client = Systemd()
    await client.connect()
    name = f"appliance-test-{secrets.token_hex(4)}.service"
    sleep = ["/bin/sleep", "300"]
    # Type=notify without a notification: the start job stays pending until stopped.
    props = [("Type", "s", "notify"), ("ExecStart", "a(sasb)", [[sleep[0], sleep, False]])]
    try:
        start = asyncio.create_task(client.start_transient(name, props))
        for _ in range(100):
            if (await client.state(name)).active_state == "activating":
                break
            await asyncio.sleep(0.05)
        await asyncio.wait_for(client.stop(name), timeout=30)  # raises unless "done"
        with pytest.raises(SystemdError, match="canceled"):
            await asyncio.wait_for(start, timeout=30)
        assert (await client.state(name)).active_state in ("inactive", "failed")
    finally:
        await client.stop(name)
        await client.reset_failed(name)
        await client.close()
