"""The roster (issue 7, part 5) with real accounts: `roster import` makes OS accounts through
adduser with /etc/skel and an initial password that only works through the first-login
password change (real PAM: pam_chauthtok); `roster export`; the admin page's import and
"Remove from hub"."""

import csv
import grp
import html
import io
import pwd
import re
import secrets
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from .browser import Browser
from .conftest import cli

pytestmark = [pytest.mark.systemd, pytest.mark.pam]

SKEL = Path("/etc/skel")


@pytest.fixture
def imported():
    """Names the test's imports may create, each removed with its home at the end."""
    names: list[str] = []
    yield names
    for name in names:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", "--remove", "--force", name], capture_output=True)


def new_names(imported: list[str], n: int) -> list[str]:
    """n unique valid user names, registered for removal."""
    names = ["r" + secrets.token_hex(4) for _ in range(n)]
    imported.extend(names)
    return names


def roster_cli(cfg, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """The real CLI's roster verb; its status, stdout and stderr."""
    return subprocess.run([sys.executable, "-m", "appliance", "--config", cfg.source,
                           "roster", *args], input=stdin, capture_output=True, text=True)


def passwords(out: str) -> dict[str, str]:
    """The import's CSV: name -> initial password."""
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["username", "initial password"]
    return dict(rows[1:])


async def change_form(browser: Browser, name: str, password: str) -> str:
    """Log in with an expired password; the change form's page (asserted: not logged in)."""
    r = await browser.login(name, password)
    page = await r.text()
    assert r.status == 200 and "Choose a new password" in page, page
    assert password not in page, "the current password is in the page"
    async with browser.request("GET", "/hub/home") as home:
        assert home.status == 302, "logged in before choosing a new password"
    return re.search(r'name="change" value="([^"]+)"', page)[1]


async def choose(browser: Browser, change: str, new: str, again: str | None = None):
    """Submit the change form; the response."""
    async with browser.request("POST", "/hub/login/password", data={
            "_xsrf": browser.xsrf, "change": change, "next": "/hub/home",
            "new_password": new, "new_password2": new if again is None else again}) as r:
        await r.read()
        return r


async def test_import_creates_accounts_whose_password_must_be_changed_at_first_login(
        tmp_path, hub_config, start_hub, make_user, make_group, imported):
    existing, group = make_user(), make_group()
    a, b, c = new_names(imported, 3)
    roster = tmp_path / "students.csv"
    roster.write_text(f"username,full name,groups\n{a},Ada Lovelace,{group}\n"
                      f"{b},Brian Kernighan,\n{c},Claude Shannon\n{existing.name},Old Hand\n")
    cfg = hub_config()
    done = roster_cli(cfg, "import", str(roster))
    assert done.returncode == 0, done.stderr
    made = passwords(done.stdout)
    assert sorted(made) == sorted([a, b, c])
    assert f"{existing.name}: the account exists already" in done.stderr
    assert pwd.getpwnam(existing.name).pw_gecos != "Old Hand"  # left untouched
    assert pwd.getpwnam(a).pw_gecos.split(",")[0] == "Ada Lovelace"
    assert a in grp.getgrnam(group).gr_mem and b not in grp.getgrnam(group).gr_mem
    home = Path(pwd.getpwnam(c).pw_dir)
    assert (home / ".bashrc").read_bytes() == (SKEL / ".bashrc").read_bytes()
    assert home.stat().st_uid == pwd.getpwnam(c).pw_uid

    hub = await start_hub(cfg)
    new = "Fresh-" + secrets.token_urlsafe(12)
    async with Browser(hub) as browser:
        change = await change_form(browser, a, made[a])
        r = await choose(browser, change, new, new + "x")
        assert r.status == 400 and "differ" in await r.text()
        r = await choose(browser, change, "abc")
        assert r.status == 400 and "longer password" in await r.text(), await r.text()
        r = await choose(browser, change, new)
        assert r.status == 302 and r.headers["Location"] == "/hub/home"
        async with browser.request("GET", "/hub/home") as home_page:
            assert home_page.status == 200
    async with Browser(hub) as again:
        r = await again.login(a, made[a])
        assert r.status == 403, "the initial password still works"
        r = await again.login(a, new)
        assert r.status == 302 and r.headers["Location"] == "/hub/home"


async def test_a_roster_with_a_bad_line_creates_nothing_and_names_the_line(
        tmp_path, hub_config, imported):
    good, later = new_names(imported, 2)
    roster = tmp_path / "students.csv"
    roster.write_text(f"{good},Good Name\nBad Name,Capital Letters\n{later},Later\n"
                      f"{later}x,Unknown Group,nosuchgroup{secrets.token_hex(3)}\n")
    done = roster_cli(hub_config(), "import", str(roster))
    assert done.returncode != 0 and done.stdout == ""
    assert "line 2: 'Bad Name' is not a valid username" in done.stderr, done.stderr
    for name in (good, later):
        with pytest.raises(KeyError):
            pwd.getpwnam(name)
    roster.write_text(f"{good},Good Name\n{later},Unknown,nosuchgroup{secrets.token_hex(3)}\n")
    done = roster_cli(hub_config(), "import", str(roster))
    assert done.returncode != 0 and "line 2: group 'nosuchgroup" in done.stderr, done.stderr
    with pytest.raises(KeyError):
        pwd.getpwnam(good)


async def test_export_lists_the_accounts_the_policy_admits(tmp_path, hub_config, make_user,
                                                          make_group, imported):
    group = make_group()
    [name] = new_names(imported, 1)
    roster = tmp_path / "students.csv"
    roster.write_text(f"{name},Grace Hopper,{group}\n")
    cfg = hub_config()
    assert roster_cli(cfg, "import", str(roster)).returncode == 0
    system = make_user(uid=990)  # below auth.min_uid: not on the list
    rows = list(csv.reader(io.StringIO(cli(cfg, "roster", "export"))))
    assert rows[0] == ["username", "full name", "groups"]
    [row] = [r for r in rows if r[0] == name]
    assert row[1] == "Grace Hopper" and group in row[2].split()
    assert system.name not in [r[0] for r in rows] and "nobody" not in [r[0] for r in rows]


def textarea(page: str) -> str:
    """The confirmation page's roster text, as the browser would send it back."""
    return html.unescape(re.search(r'<textarea name="text" hidden>(.*?)</textarea>', page,
                                   re.S)[1])


async def upload(browser: Browser, text: str):
    """The admin page's roster form: a multipart upload of a CSV file; the response."""
    form = aiohttp.FormData()
    form.add_field("_xsrf", browser.xsrf)
    form.add_field("roster", text.encode(), filename="students.csv", content_type="text/csv")
    async with browser.request("POST", "/hub/admin/roster", data=form) as r:
        await r.read()
        return r


async def test_the_admin_page_imports_a_roster_after_a_confirmation(
        hub_config, start_hub, make_user, imported):
    teacher, existing = make_user(), make_user()
    a, b = new_names(imported, 2)
    cfg = hub_config(auth={"admin_users": [teacher.name], "manage_accounts": True})
    hub = await start_hub(cfg)
    async with Browser(hub) as t:
        await t.login(teacher.name, teacher.password)
        async with t.request("GET", "/hub/admin") as r:
            assert 'enctype="multipart/form-data"' in await r.text()
        r = await upload(t, f"{a},Alan Turing\n{existing.name},Old Hand\nBad!,x\n")
        assert r.status == 400 and "line 3: &#39;Bad!&#39; is not a valid username" in \
            await r.text()
        r = await upload(t, f"username,full name\n{a},Alan Turing\n{b},Barbara Liskov\n"
                            f"{existing.name},Old Hand\n")
        page = await r.text()
        assert r.status == 200 and "Create 2 accounts?" in page
        assert f'data-create="{a}"' in page and f'data-existing="{existing.name}"' in page
        for name in (a, b):
            with pytest.raises(KeyError):
                pwd.getpwnam(name)  # nothing before the confirmation
        async with t.request("POST", "/hub/admin/roster/create", data={
                "_xsrf": t.xsrf, "text": textarea(page)}) as r:
            page = await r.text()
        assert r.status == 200 and "shown only this once" in page
        made = dict(re.findall(r'data-created="([^"]+)"><td>[^<]+</td><td><code>([^<]+)<',
                               page))
    assert sorted(made) == sorted([a, b]) and pwd.getpwnam(b).pw_gecos.startswith("Barbara Liskov")
    async with Browser(hub) as student:
        await change_form(student, b, made[b])


async def test_without_manage_accounts_the_admin_page_only_reads(hub_config, start_hub,
                                                                 make_user, imported):
    teacher, student = make_user(), make_user()
    [name] = new_names(imported, 1)
    hub = await start_hub(hub_config(auth={"admin_users": [teacher.name]}))
    async with Browser(hub) as s:
        assert (await s.login(student.name, student.password)).status == 302
    async with Browser(hub) as t:
        await t.login(teacher.name, teacher.password)
        async with t.request("GET", "/hub/admin") as r:
            page = await r.text()
        assert "manage_accounts = true" in page and "multipart/form-data" not in page
        assert "Remove from hub" not in page
        r = await upload(t, f"{name},Nobody Made\n")
        assert r.status == 403 and "manage_accounts = true" in await r.text()
        async with t.request("POST", "/hub/admin/roster/create", data={
                "_xsrf": t.xsrf, "text": f"{name},Nobody Made\n"}) as r:
            assert r.status == 403
        async with t.request("POST", "/hub/admin/action", data={
                "_xsrf": t.xsrf, "action": "remove", "user": student.name,
                "confirm": "yes"}) as r:
            assert r.status == 403 and "manage_accounts = true" in await r.text()
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    assert await hub.app["store"].get_user(student.name) is not None


async def test_remove_from_hub_ends_session_token_and_server_but_keeps_the_account(
        hub_config, start_hub, make_user):
    teacher, student = make_user(), make_user()
    cfg = hub_config(auth={"admin_users": [teacher.name], "manage_accounts": True})
    hub = await start_hub(cfg)
    token = cli(cfg, "token", student.name)
    async with Browser(hub) as s, Browser(hub, token=token) as api, Browser(hub) as t:
        assert (await s.login(student.name, student.password)).status == 302
        async with api.request("POST", f"/hub/api/users/{student.name}/server") as r:
            assert r.status in (201, 202)
        assert (await api.progress(student.name))[-1]["ready"]
        await t.login(teacher.name, teacher.password)
        form = {"_xsrf": t.xsrf, "action": "remove", "user": student.name}
        async with t.request("POST", "/hub/admin/action", data=form) as r:
            assert f"deluser --remove-home {student.name}" in await r.text()
        assert hub.app["spawner"].get(student.name).state == "running", "no confirmation"
        async with t.request("POST", "/hub/admin/action", data={**form, "confirm": "yes"}) as r:
            async with t.request("GET", r.headers["Location"]) as page:
                assert f"Removed {student.name} from the hub: 1 server(s) stopped, 1 " \
                       "session(s) and 1 token(s) ended" in await page.text()
        assert hub.app["spawner"].get(student.name).state == "stopped"
        async with s.request("GET", "/hub/home") as r:
            assert r.status == 302, "the session still works"
        async with api.request("GET", "/hub/api/user") as r:
            assert r.status in (401, 403), "the token still works"
    assert pwd.getpwnam(student.name).pw_name == student.name
    assert await hub.app["store"].get_user(student.name) is None
