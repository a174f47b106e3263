"""What a failure shows (issue 8, part 6): a 5xx page or JSON error has a fixed message and an
incident id that the journal line has too, never the error's own text; a user name with a
newline cannot forge a log line."""

import logging
import re

import pytest

from appliance.errors import SystemdError

from .browser import Browser
from .conftest import cli

pytestmark = [pytest.mark.systemd, pytest.mark.pam]

RAW = "org.freedesktop.DBus.Error.AccessDenied: secret-internal-detail"


@pytest.mark.parametrize("error, status", [
    (SystemdError(RAW), 503),
    (RuntimeError("Traceback-ish secret-internal-detail"), 500),
])
async def test_a_5xx_shows_an_incident_id_never_the_error(start_hub, hub_config, make_user,
                                                          caplog, error, status):
    alice = make_user()
    cfg = hub_config()
    hub = await start_hub(cfg)

    async def broken(*args, **kwargs):  # fault injection: systemd or the hub itself fails
        raise error

    hub.app["spawner"].start = broken
    caplog.set_level(logging.ERROR, logger="appliance")
    async with Browser(hub, token=cli(cfg, "token", alice.name)) as api:
        async with api.request("POST", f"/hub/api/users/{alice.name}/server") as r:
            body = await r.json()
    assert r.status == status
    assert "secret-internal-detail" not in body["message"]
    incident = body["incident"]
    assert re.fullmatch(r"[0-9a-f]{8}", incident) and incident in body["message"]
    logged = [rec.getMessage() for rec in caplog.records if incident in rec.getMessage()]
    assert logged and "secret-internal-detail" in logged[0]
    async with Browser(hub) as a:  # the browser's page: the same, as HTML
        await a.login(alice.name, alice.password)
        async with a.request("POST", f"/hub/spawn/{alice.name}",
                             data={"_xsrf": a.xsrf}) as r:
            page = await r.text()
        assert r.status == status and "secret-internal-detail" not in page
        assert re.search(r"incident [0-9a-f]{8}", page)


async def test_a_newline_in_a_name_cannot_forge_a_log_line(start_hub, make_user, caplog):
    hub = await start_hub()
    caplog.set_level(logging.INFO, logger="appliance")
    forged = "nobody\nINFO appliance.pages: user='root' logged in"
    async with Browser(hub) as a:
        async with a.request("GET", "/hub/login") as r:
            assert r.status == 200
        async with a.request("POST", "/hub/login", data={
                "_xsrf": a.xsrf, "username": forged, "password": "x"}) as r:
            assert r.status in (403, 429)
    lines = "\n".join(rec.getMessage() for rec in caplog.records).splitlines()
    assert not any(line.startswith("INFO appliance.pages") for line in lines), lines
