"""nbgrader 0.9.5 (PyPI, unmodified; tests/infra/pypi-tools.sh) in multi-course mode with
JupyterHubAuthPlugin, set up as the README's "Works with" says and as nbgrader's
demo_multiple_classes does on JupyterHub 5: each course's formgrader is jupyterhub-singleuser
run by the hub as a managed service under the course's grader account (`user`, `cwd`,
`oauth`), reached at /services/<course>/ by the course's staff (a unix group formgrade-<course>
in auth.sync_groups, a role with access:services!service=<course>); students' servers are
jupyterhub-singleuser from the same venv, their token's [roles.server] scopes let nbgrader
read their groups; the exchange is in spawner.shared_paths.

Through the hub's proxy, with cookies from the login form and the OAuth dance, as the web UI
does it: the instructor adds a student to the course (`nbgrader db student add` in a kernel of
the formgrader, which puts them in the hub group nbgrader-<course> through the hub's API),
creates an assignment with an autograded cell, generates and releases it; the student lists,
fetches, answers and submits it; the instructor collects and autogrades, and the score is the
student's. A student outside the course sees none of it; a student cannot open the formgrader.
"""

import asyncio
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from appliance import serviceunits, units
from tests import nbgrader_course
from tests.nbgrader_course import ANSWER, NOTEBOOK, SERVER_ROLE

from .browser import Browser
from .conftest import cli
from .test_hub_oauth import free_port, visit, wait_listening

TOOLS = os.environ.get("APPLIANCE_PYPI_TOOLS", "")
VENV = Path(TOOLS) / "nbgrader"
SINGLEUSER = VENV / "bin/jupyterhub-singleuser"
EXCHANGE = Path(nbgrader_course.EXCHANGE)
GLOBAL_CONFIG = Path(nbgrader_course.GLOBAL_CONFIG)
SPAWN_TIMEOUT = 180

pytestmark = [pytest.mark.systemd, pytest.mark.pam, pytest.mark.skipif(
    not TOOLS or not SINGLEUSER.exists(),
    reason="no nbgrader venv in APPLIANCE_PYPI_TOOLS: run tests/run, which builds it with "
           "tests/infra/pypi-tools.sh")]

def journal(unit: str, lines: int = 80) -> str:
    return subprocess.run(["journalctl", "--no-pager", "-o", "cat", "-n", str(lines), "-u",
                           unit], capture_output=True, text=True).stdout


def write_as(user: str, path: Path, text: str) -> None:
    """A file in an account's home, theirs, as they would write it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    shutil.chown(path.parent, user, user)
    shutil.chown(path, user, user)


@pytest.fixture
def nbgrader_system():
    """What the sysadmin sets up outside the hub: the global nbgrader config and the
    exchange, writable by all (nbgrader's docs: chmod ugo+rw), sticky; removed afterwards."""
    assert not GLOBAL_CONFIG.exists() and not EXCHANGE.exists(), "left over from elsewhere"
    GLOBAL_CONFIG.parent.mkdir(parents=True, exist_ok=True)
    GLOBAL_CONFIG.write_text(nbgrader_course.GLOBAL_NBGRADER_CONFIG)
    EXCHANGE.mkdir(parents=True)
    EXCHANGE.chmod(0o1777)
    yield
    GLOBAL_CONFIG.unlink()
    shutil.rmtree(EXCHANGE.parent)


@pytest.fixture
def unix_groups():
    """Factory: a unix group of this exact name, removed afterwards."""
    made = []

    def _make(name: str) -> str:
        subprocess.run(["groupadd", name], check=True, capture_output=True)
        made.append(name)
        return name

    yield _make
    for name in made:
        subprocess.run(["groupdel", name], capture_output=True)


class Person:
    """A logged-in browser: the hub's cookies, and the servers' and services' own after
    their OAuth dance; their XSRF cookies sent back as the pages' scripts do."""

    def __init__(self, hub, user):
        self.user = user
        self.browser = Browser(hub)

    def xsrf(self, prefix: str) -> dict:
        for c in self.browser.session.cookie_jar:
            if c.key == "_xsrf" and prefix.startswith(c["path"] or "/"):
                return {"X-XSRFToken": c.value}
        return {}

    async def open(self, prefix: str, confirm: bool) -> str:
        """Open a server or service (the OAuth dance, a confirmation once for a service)."""
        status, body, seen = await visit(self.browser, confirm=confirm, start=prefix)
        assert status == 200, (status, body[:500], seen)
        return body

    async def call(self, method: str, path: str, expect: int = 200, **kw):
        prefix = path[:path.index("/", path.index("/", 1) + 1) + 1]
        async with self.browser.request(method, path, headers=self.xsrf(prefix),
                                        timeout=aiohttp.ClientTimeout(total=120), **kw) as r:
            text = await r.text()
            assert r.status == expect, (method, path, r.status, text[:2000])
            return json.loads(text) if text else None

    async def start_server(self) -> None:
        """Home's Start button, then the progress to its end."""
        async with self.browser.request("POST", f"/hub/spawn/{self.user.name}",
                                        data={"_xsrf": self.browser.xsrf}) as r:
            assert r.status in (302, 303), await r.text()
        events = await self.browser.progress(self.user.name)
        assert events[-1].get("ready"), (events, journal(units.unit_name(self.user.name)))


async def run_code(person: Person, prefix: str, code: str) -> str:
    """A kernel in the server at prefix, code run over its websocket; text/plain of the
    result (Lab's way, as Browser.execute does for /user/<name>/)."""
    kernel = await person.call("POST", f"{prefix}api/kernels", 201, json={})
    try:
        return await person.browser.run_on_kernel(prefix, kernel["id"], code,
                                                  person.xsrf(prefix))
    finally:
        await person.call("DELETE", f"{prefix}api/kernels/{kernel['id']}", 204)


async def test_two_courses_release_fetch_submit_collect_autograde(
        start_hub, hub_config, make_user, unix_groups, nbgrader_system):
    c1, c2 = (f"c{secrets.token_hex(3)}" for _ in range(2))
    for course in (c1, c2):
        unix_groups(f"formgrade-{course}")
    grader1 = make_user(groups=f"formgrade-{c1}")
    grader2 = make_user(groups=f"formgrade-{c2}")
    instructor = make_user(groups=f"formgrade-{c1}")
    student, outsider = make_user(), make_user()
    for grader, cid in ((grader1, c1), (grader2, c2)):
        write_as(grader.name, Path(f"/home/{grader.name}/.jupyter/nbgrader_config.py"),
                 nbgrader_course.grader_config(grader.name, cid))
        (Path(f"/home/{grader.name}") / cid).mkdir()
        shutil.chown(Path(f"/home/{grader.name}") / cid, grader.name, grader.name)
    admin = make_user()
    ports = free_port(), free_port()
    cfg = hub_config(
        auth={"sync_groups": [f"formgrade-{c1}", f"formgrade-{c2}"], "admin_users": [admin.name]},
        spawner={"command": [str(SINGLEUSER)],
                 "shared_paths": ["/srv/data", str(EXCHANGE)]},
        **nbgrader_course.course_tables(c1, grader1.name, ports[0], str(VENV)),
        **nbgrader_course.course_tables(c2, grader2.name, ports[1], str(VENV)),
        **{"roles.server": SERVER_ROLE})
    hub = await start_hub(cfg)
    people = {u.name: Person(hub, u) for u in (instructor, student, outsider)}
    teacher, pupil, other = people.values()
    try:
        # The grader accounts are hub users (JupyterHub's demo lists them in allowed_users):
        # nbgrader asks the hub for their groups.
        async with Browser(hub, token=cli(cfg, "token", admin.name)) as api:
            async with api.request("POST", "/hub/api/users",
                                   json={"usernames": [grader1.name, grader2.name]}) as r:
                assert r.status == 201, await r.text()
        await asyncio.gather(*(wait_listening(port, serviceunits.unit_name(c))
                               for port, c in zip(ports, (c1, c2), strict=True)))
        for p in people.values():
            r = await p.browser.login(p.user.name, p.user.password)
            assert r.status in (302, 303), r.status
        await asyncio.gather(*(p.start_server() for p in people.values()))
        await scenario(hub, c1, c2, teacher, pupil, other)
    except AssertionError as e:
        logs = "\n".join(f"--- journal of {unit}:\n{journal(unit)}" for unit in (
            serviceunits.unit_name(c1), units.unit_name(student.name)))
        raise AssertionError(f"{e}\n{logs}") from None
    finally:
        for p in people.values():
            await p.browser.__aexit__(None, None, None)


async def scenario(hub, c1, c2, teacher: Person, pupil: Person, other: Person) -> None:
    fg = f"/services/{c1}/"
    me = f"/user/{teacher.user.name}/"
    # The instructor's course list: the formgrader of their course, not the other one.
    await teacher.open(me, confirm=False)
    courses = await teacher.call("GET", f"{me}formgraders")
    assert courses["success"], courses
    # (Its own server's formgrader is listed too, kind "local": the venv enables every
    # extension of nbgrader's for everyone.)
    assert [(c["course_id"], c["url"]) for c in courses["value"] if c["kind"] == "jupyterhub"
            ] == [(c1, hub.make_url(f"{fg}lab?formgrader=true").human_repr())], courses
    # The formgrader, behind the hub's OAuth: staff only.
    await teacher.open(fg, confirm=True)
    status, body, _ = await visit(pupil.browser, confirm=False, start=fg)
    assert status == 403, (status, body[:300])
    # Enrol the student as nbgrader's docs say (`nbgrader db student add`, here in a kernel
    # of the formgrader): JupyterHubAuthPlugin puts them in the hub group nbgrader-<c1>.
    out = await run_code(teacher, fg, nbgrader_course.student_add(pupil.user.name))
    assert out.startswith("(0,"), out
    assert pupil.user.name in hub.app["groups"].get(f"nbgrader-{c1}").users
    # Create the assignment, put its notebook in, generate and release it.
    await teacher.call("PUT", f"{fg}formgrader/api/assignment/ps1", json={})
    await teacher.call("PUT", f"{fg}api/contents/{c1}/source/ps1/problem1.ipynb", 201,
                       json={"type": "notebook", "format": "json", "content": NOTEBOOK})
    for step in ("assign", "release"):
        result = await teacher.call("POST", f"{fg}formgrader/api/assignment/ps1/{step}")
        assert result["success"], (step, result)
    # The student: their course, the assignment in it, fetched, answered, submitted.
    mine = f"/user/{pupil.user.name}/"
    await pupil.open(mine, confirm=False)
    listed = await pupil.call("GET", f"{mine}assignments?course_id=")
    assert [(a["course_id"], a["assignment_id"], a["status"]) for a in listed["value"]] == [
        (c1, "ps1", "released")], listed
    listed = await pupil.call("POST", f"{mine}assignments/fetch",
                              data={"course_id": c1, "assignment_id": "ps1"})
    fetched = [a for a in listed["value"] if a["status"] == "fetched"]
    assert fetched, listed
    path = fetched[0]["notebooks"][0]["path"]
    model = await pupil.call("GET", f"{mine}api/contents/{path}")
    notebook = model["content"]
    assert "raise NotImplementedError" in notebook["cells"][0]["source"], notebook
    notebook["cells"][0]["source"] = ANSWER
    await pupil.call("PUT", f"{mine}api/contents/{path}",
                     json={"type": "notebook", "format": "json", "content": notebook})
    result = await pupil.call("POST", f"{mine}assignments/submit",
                              data={"course_id": c1, "assignment_id": "ps1"})
    assert any(a["status"] == "submitted" for a in result["value"]), result
    # Someone not in the course sees nothing of it and cannot fetch it.
    await other.open(f"/user/{other.user.name}/", confirm=False)
    listed = await other.call("GET", f"/user/{other.user.name}/assignments?course_id=")
    assert listed == {"success": True, "value": []}, listed
    # The instructor collects and autogrades; the score is the student's answer's.
    result = await teacher.call("POST", f"{fg}formgrader/api/assignment/ps1/collect")
    assert result["success"], result
    result = await teacher.call(
        "POST", f"{fg}formgrader/api/submission/ps1/{pupil.user.name}/autograde")
    assert result["success"], result
    submissions = await teacher.call("GET", f"{fg}formgrader/api/submissions/ps1")
    scores = {s["student"]: (s["score"], s["max_score"], s["autograded"]) for s in submissions}
    assert scores == {pupil.user.name: (2.0, 2.0, True)}, submissions
