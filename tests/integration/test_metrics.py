"""/hub/metrics (issue 7, part 4) read by Prometheus' own parser: JupyterHub's names, a
spawn timed by status, per-server memory limits; admins only, or loopback when allowed."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .browser import Browser
from .conftest import cli

pytestmark = [pytest.mark.systemd, pytest.mark.pam]


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of an exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_for_admins_with_jupyterhubs_names(start_hub, hub_config, make_user):
    teacher, student = make_user(), make_user()
    cfg = hub_config(auth={"admin_users": [teacher.name]})
    hub = await start_hub(cfg)
    async with Browser(hub, token=cli(cfg, "token", student.name)) as s, \
            Browser(hub, token=cli(cfg, "token", teacher.name)) as t:
        async with s.request("POST", f"/hub/api/users/{student.name}/server") as r:
            assert r.status in (201, 202)
        assert (await s.progress(student.name))[-1]["ready"]
        async with s.request("GET", "/hub/metrics") as r:
            assert r.status == 403
        async with t.request("GET", "/hub/metrics") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            got = samples(await r.text())
    assert got[("jupyterhub_running_servers", ())] == 1
    assert got[("jupyterhub_total_users", ())] >= 1
    assert ("jupyterhub_active_users", (("period", "24h"),)) in got
    assert got[("jupyterhub_server_spawn_duration_seconds_count",
                (("status", "success"),))] == 1
    limit = ("appliance_server_memory_limit_bytes", (("server", ""), ("user", student.name)))
    assert got[limit] == 768 * 2**20
    progress = [k for k in got if k[0] == "jupyterhub_request_duration_seconds_count"
                and ("handler", "/hub/api/users/{name}/server/progress") in k[1]]
    assert progress, sorted({k[1] for k in got if k[0].startswith("jupyterhub_request")})


@pytest.mark.parametrize("allow", [False, True])
async def test_loopback_reads_without_a_token_only_when_allowed(start_hub, hub_config, allow):
    hub = await start_hub(hub_config(metrics={"allow_loopback": allow}))
    async with Browser(hub) as anonymous:
        async with anonymous.request("GET", "/hub/metrics") as r:
            assert r.status == (200 if allow else 401)
