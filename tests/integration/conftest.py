"""Fixtures for the system tier: throwaway OS users, a PAM service, a real hub.

Everything here is real: users made with useradd/chpasswd, PAM from /etc/pam.d, the booted
systemd's D-Bus, Jupyter servers as transient units. Each fixture makes uniquely named
resources and removes them afterwards.
"""

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from appliance import config
from appliance.app import build_app

REPO = Path(__file__).resolve().parents[2]


def run(*argv: str, input: str | None = None) -> None:
    """Run a system command; fail loudly with its output."""
    subprocess.run(argv, input=input, text=True, check=True, capture_output=True)


def cli(cfg, *args: str) -> str:
    """Run the real `notebook-appliance` CLI against the test config."""
    out = subprocess.run([sys.executable, "-m", "appliance", "--config", cfg.source, *args],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


class OSUser:
    """A throwaway OS account with a password."""

    def __init__(self, name: str, password: str):
        self.name = name
        self.password = password


@pytest.fixture
def make_user():
    """Factory: make_user(**useradd options) -> OSUser; all are removed at the end."""
    made = []

    def _make(uid: int | None = None, groups: str | None = None,
              name: str | None = None) -> OSUser:
        name = name or "t" + secrets.token_hex(4)
        password = secrets.token_urlsafe(12)
        # --badname: names that useradd's default rule refuses but NSS may well hold
        # (all digits, non-ASCII), for the tests of odd names.
        argv = ["useradd", "--badname", "--create-home", "--shell", "/bin/bash"]
        if uid is not None:
            argv += ["--uid", str(uid)]
        if groups:
            argv += ["--groups", groups]
        run(*argv, name)
        made.append(name)
        run("chpasswd", input=f"{name}:{password}\n")
        return OSUser(name, password)

    yield _make
    for name in made:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", "--remove", "--force", name], capture_output=True)


@pytest.fixture
def make_group():
    """Factory: a throwaway unix group, removed at the end."""
    made = []

    def _make() -> str:
        name = "g" + secrets.token_hex(4)
        run("groupadd", name)
        made.append(name)
        return name

    yield _make
    for name in made:
        subprocess.run(["groupdel", name], capture_output=True)


@pytest.fixture
def pam_service():
    """The shipped PAM service file, installed under a unique name for this test."""
    name = "notebook-appliance-test-" + secrets.token_hex(4)
    path = Path("/etc/pam.d") / name
    shutil.copy(REPO / "etc/pam.d/notebook-appliance", path)
    yield name
    path.unlink()


@pytest.fixture
def runtime_dir():
    """A fresh runtime directory under /run (tmpfs, as in production)."""
    path = Path("/run") / ("notebook-appliance-test-" + secrets.token_hex(4))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def hub_config(tmp_path, pam_service, runtime_dir):
    """Factory: write an appliance.toml with per-section overrides and load it as the hub does."""

    def _config(extra_toml: str = "", **overrides: dict) -> config.Config:
        """extra_toml: tables written as they are (e.g. [services.<name>] and [roles.*])."""
        sections = {
            "hub": {"listen": "127.0.0.1", "state_dir": str(tmp_path / "state"),
                    "runtime_dir": str(runtime_dir)},
            "auth": {"pam_service": pam_service},
            "limits": {"memory": "768M", "cpu": 0.5, "tasks": 200},
        }
        for section, values in overrides.items():
            sections.setdefault(section, {}).update(values)
        path = tmp_path / "appliance.toml"
        path.write_text("".join(
            f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
            for name, table in sections.items()) + extra_toml)
        path.chmod(0o600)  # as a sysadmin keeps a file with a service's api_token
        return config.load(path)

    return _config


@pytest.fixture
async def start_hub(hub_config):
    """Factory: start a real hub (aiohttp server on loopback); stopped at the end."""
    servers = []

    async def _start(cfg: config.Config | None = None, port: int | None = None) -> TestServer:
        """port: the same one again for a hub that restarts (services are told it)."""
        server = TestServer(build_app(cfg or hub_config()), host="127.0.0.1", port=port)
        await server.start_server()
        servers.append(server)
        # As serve() does once it listens: servers and services reach the hub's API where
        # this test server listens.
        server.app["spawner"].hub_url = f"http://127.0.0.1:{server.port}"
        await server.app["services"].start_all(server.app["spawner"].hub_url + "/hub/api")
        return server

    yield _start
    for server in servers:
        await stop_units(server)
        await server.close()


async def stop_units(server: TestServer) -> None:
    """Stop every unit a test hub started, so no server outlives its test."""
    spawner = server.app.get("spawner")
    if spawner is None or spawner.systemd._bus is None:
        return
    await server.app["services"].stop_all()
    for s in list(spawner.servers.values()):
        if s.state in ("starting", "running"):
            await spawner.stop(s.user, s.name)
        await spawner.systemd.stop(s.unit)  # also units whose hub record says stopped


def booted() -> bool:
    """True inside the throwaway container tests/run boots."""
    return os.environ.get("APPLIANCE_BOOTED_SYSTEMD") == "1"



async def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until something accepts on port; fail early if the hub exited."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        assert proc.poll() is None, f"the hub exited with status {proc.returncode}"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            assert asyncio.get_running_loop().time() < deadline, "hub did not listen"
            await asyncio.sleep(0.2)


@pytest.fixture
def serve_hub(tmp_path):
    """Factory: the real `notebook-appliance serve` for cfg as its own process, once it listens.

    Its log goes to tmp_path/hub-N.log (a pipe could fill and block it). Stopped at the end.
    """
    procs = []

    async def _serve(cfg: config.Config) -> subprocess.Popen:
        log = open(tmp_path / f"hub-{len(procs)}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "appliance", "--config", cfg.source,
                                 "serve"], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        procs.append(proc)
        await wait_listening(cfg.hub.port, proc)
        return proc

    yield _serve
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=40)
