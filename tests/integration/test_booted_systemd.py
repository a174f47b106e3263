"""Smoke tests for the booted test system that tests/run provides."""

import os
import secrets
import stat
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.systemd, pytest.mark.pam]

SRC = "/src"
SYSTEM_BUS = "/run/dbus/system_bus_socket"

# Run as the throwaway user: every file under /src (but .git) must be readable
# and every directory traversable, and the package must import from it.
UNREADABLE_CHECK = """
import os, sys
bad = []
for root, dirs, files in os.walk(sys.argv[1]):
    dirs[:] = [d for d in dirs if d != ".git"]
    if not os.access(root, os.R_OK | os.X_OK):
        bad.append(root)
    bad += [os.path.join(root, f) for f in files
            if not os.access(os.path.join(root, f), os.R_OK)]
import appliance
print("\\n".join(bad))
"""


def test_pid1_is_systemd():
    with open("/proc/1/comm") as f:
        assert f.read().strip() == "systemd"
    assert os.environ.get("APPLIANCE_BOOTED_SYSTEMD") == "1"


def test_system_bus_socket_exists():
    assert stat.S_ISSOCK(os.stat(SYSTEM_BUS).st_mode), SYSTEM_BUS


@pytest.fixture
def throwaway_user():
    """Create a uniquely named OS user with a password; remove it afterwards."""
    name = "smoke-" + secrets.token_hex(4)
    subprocess.run(["useradd", "--create-home", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", "--remove", name], check=True)


def test_useradd_and_chpasswd_work(throwaway_user):
    password = secrets.token_urlsafe(12)
    subprocess.run(
        ["chpasswd"], input=f"{throwaway_user}:{password}\n", text=True, check=True
    )
    status = subprocess.run(
        ["passwd", "--status", throwaway_user], capture_output=True, text=True, check=True
    )
    assert status.stdout.split()[1] == "P", status.stdout  # P: usable password


def test_src_is_readable_by_a_non_root_user(throwaway_user):
    result = subprocess.run(
        [sys.executable, "-c", UNREADABLE_CHECK, SRC],
        user=throwaway_user,
        group=throwaway_user,
        extra_groups=[],
        cwd="/",
        env={"PYTHONPATH": SRC, "PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"unreadable for {throwaway_user}:\n{result.stdout}"
