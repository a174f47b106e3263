"""The account helper (accounthelper.py) through its real units on the booted systemd: the socket
as shipped (Accept=yes, 0600) and its hardened per-request service, with real PAM, adduser and
chage. The installed hub reaches it because /etc is read-only to it (the VM tier); here the
test plays the hub."""

import os
import secrets
import stat
import subprocess
from pathlib import Path

import pytest

from appliance import accounthelper

from .conftest import REPO, run

pytestmark = [pytest.mark.systemd, pytest.mark.pam]

UNITS = Path("/run/systemd/system")


@pytest.fixture
def helper(tmp_path):
    """The shipped socket and service units under test names, their program this tree;
    the socket's path. Removed at the end."""
    name = "test-accounts-" + secrets.token_hex(3)
    path = Path(f"/run/{name}.sock")
    socket_unit = (REPO / "units/notebook-appliance-accounts.socket").read_text().replace(
        f"ListenStream={accounthelper.SOCKET}", f"ListenStream={path}")
    service_unit = (REPO / "units/notebook-appliance-accounts@.service").read_text().replace(
        "ExecStart=/usr/bin/notebook-appliance account-helper",
        f"Environment=PYTHONPATH={REPO}\nExecStart=/usr/bin/python3 -m appliance account-helper")
    assert str(path) in socket_unit and "-m appliance" in service_unit, "units changed shape"
    (UNITS / f"{name}.socket").write_text(socket_unit)
    (UNITS / f"{name}@.service").write_text(service_unit)
    run("systemctl", "daemon-reload")
    run("systemctl", "start", f"{name}.socket")
    yield path
    subprocess.run(["systemctl", "stop", f"{name}.socket"], capture_output=True)
    for unit in (f"{name}.socket", f"{name}@.service"):
        (UNITS / unit).unlink()
    run("systemctl", "daemon-reload")


@pytest.fixture
def new_accounts():
    """Names a roster may create, removed with their homes at the end."""
    names: list[str] = []
    yield names
    for name in names:
        subprocess.run(["userdel", "--remove", "--force", name], capture_output=True)


def aging(name: str) -> str:
    """chage -l: the account's password aging, in words."""
    return subprocess.run(["chage", "-l", name], capture_output=True, text=True,
                          check=True, env={"LC_ALL": "C"}).stdout


def test_only_root_may_connect(helper):
    mode = os.stat(helper)
    assert stat.S_IMODE(mode.st_mode) == 0o600 and mode.st_uid == 0


async def test_the_helper_makes_accounts_and_changes_an_expired_password(
        helper, new_accounts, pam_service):
    name = "h" + secrets.token_hex(4)
    new_accounts.append(name)
    answer = await accounthelper.call({"op": "create-accounts", "roster": f"{name},Hel Per,\n"},
                                 path=helper)
    assert answer["problems"] == [] and [c["name"] for c in answer["created"]] == [name]
    initial = answer["created"][0]["password"]
    assert Path(f"/home/{name}").is_dir()
    assert "password must be changed" in aging(name), aging(name)

    wrong = await accounthelper.call({"op": "change-password", "service": pam_service,
                                 "user": name, "current": "not-it", "new": "N3w-pass-word!"},
                                path=helper)
    assert wrong == {"ok": False, "reason": "The current password was not accepted."}
    right = await accounthelper.call({"op": "change-password", "service": pam_service,
                                 "user": name, "current": initial, "new": "N3w-pass-word!",
                                 "rhost": "192.0.2.7"}, path=helper)
    assert right == {"ok": True, "reason": ""}
    assert "password must be changed" not in aging(name)


async def test_a_bad_roster_is_refused_by_the_helper_itself(helper, new_accounts):
    name = "h" + secrets.token_hex(4)
    new_accounts.append(name)
    answer = await accounthelper.call(
        {"op": "create-accounts", "roster": f"{name},A,\nBad Name!,B,\n"}, path=helper)
    assert answer["created"] == [] and "line 2" in " ".join(answer["problems"])
    assert subprocess.run(["getent", "passwd", name], capture_output=True).returncode == 2


async def test_garbage_gets_an_answer_not_a_hang(helper):
    answer = await accounthelper.call({"op": "format-disk"}, path=helper)
    assert answer["ok"] is False and answer["reason"] == "bad request"


async def test_an_absent_helper_is_a_clear_error(tmp_path):
    with pytest.raises(accounthelper.HelperError, match="systemctl status"):
        await accounthelper.call({"op": "create-accounts", "roster": ""}, path=tmp_path / "none")
