"""The D-Bus client against the booted systemd, with JobRemoved signals lost on purpose."""

import asyncio
import secrets

import pytest

from appliance import systemd as systemd_module
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
