"""A real JupyterHub (PyPI) and our hub side by side in the test container, as processes.

JupyterHub, jupyterhub-singleuser and configurable-http-proxy come from the directory
tests/bench/jupyterhub-tools.sh builds (JupyterHub 6.1.1, systemdspawner, CHP on Debian's
node); tests/run builds it (cached) and binds it into the container at the same path
(APPLIANCE_BENCH_TOOLS, tests/infra/nspawn.sh). Both hubs run as their own processes, so a
module's tests can share them (a spawn takes seconds; the comparison needs one of each).
"""

import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from appliance import units
from tests.bench.jupyterhub_side import base_config
from tests.ports import free_ports

START_TIMEOUT = 120.0
REPO = Path(__file__).resolve().parents[2]


def tools_missing() -> str | None:
    """Why there is no JupyterHub to compare with here, or None when there is one."""
    tools = os.environ.get("APPLIANCE_BENCH_TOOLS", "")
    if not tools or not (Path(tools) / ".complete").is_file():
        return ("no real JupyterHub in the container (APPLIANCE_BENCH_TOOLS unset): tests/run "
                "builds it with tests/bench/jupyterhub-tools.sh and binds it in")
    return None


def wait_answering(url: str, proc: subprocess.Popen, log: Path) -> None:
    """Until GET url answers 200; an error with the log's tail if the process exits first."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}:\n"
                               f"{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not answering after {START_TIMEOUT:.0f} s:\n{tail(log)}")


def tail(log: Path, lines: int = 30) -> str:
    """The last lines of a log file, for a failure message."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


def stop_servers(base: str, token: str, names: list[str]) -> None:
    """DELETE each user's default server through the hub's API; never raises."""
    for name in names:
        req = urllib.request.Request(f"{base}/hub/api/users/{name}/server", method="DELETE",
                                     headers={"Authorization": f"token {token}"})
        try:
            urllib.request.urlopen(req, timeout=40).close()
        except OSError:
            pass


def end(proc: subprocess.Popen) -> None:
    """SIGTERM a hub we started (JupyterHub stops its proxy and servers), then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class JupyterHub:
    """JupyterHub with DummyAuthenticator and systemdspawner, serving jupyterhub-singleuser
    around the same Debian notebook server ours runs."""

    def __init__(self, workdir: Path, admin: str, services: dict[str, str]):
        self.tools = Path(os.environ["APPLIANCE_BENCH_TOOLS"])
        self.workdir, self.admin, self.services = workdir, admin, services
        public, hub, proxy_api = free_ports(3)
        self.ports = {"public": public, "hub": hub, "proxy_api": proxy_api}
        self.base = f"http://127.0.0.1:{public}"
        self.log = workdir / "jupyterhub.log"
        self.proc: subprocess.Popen | None = None
        self.version = (self.tools / "pip-freeze.txt").read_text().split("jupyterhub==")[1] \
            .split()[0]

    def config(self) -> str:
        """jupyterhub_config.py: the benchmark's base (its defaults, plus what this container
        needs), DummyAuthenticator and the external services."""
        services = [{"name": n, "api_token": t} for n, t in self.services.items()]
        head = "# Written by tests/integration/real_jupyterhub.py for one test module.\n"
        return head + base_config(self.tools, self.workdir, self.ports) + f"""
# Tokens from `jupyterhub token`, as ours come from `notebook-appliance token`: no login.
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {{"{self.admin}"}}
# External services: a name and a token, nothing started.
c.JupyterHub.services = {services!r}
"""

    def env(self) -> dict[str, str]:
        """A clean environment: nothing of the test run's PYTHONPATH reaches JupyterHub."""
        return {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": str(self.workdir),
                "PYTHONDONTWRITEBYTECODE": "1"}

    def start(self) -> None:
        """Write the config, start `python -m jupyterhub`, wait for its API via the proxy."""
        (self.workdir / "jupyterhub_config.py").write_text(self.config())
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [str(self.tools / "venv/bin/python"), "-m", "jupyterhub", "-f",
                 "jupyterhub_config.py"], cwd=self.workdir, env=self.env(),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        wait_answering(f"{self.base}/hub/api/", self.proc, self.log)

    def token(self, user: str) -> str:
        """`jupyterhub token USER`: a new API token, as an operator makes one."""
        out = subprocess.run([str(self.tools / "venv/bin/python"), "-m", "jupyterhub", "token",
                              "-f", "jupyterhub_config.py", user], cwd=self.workdir,
                             env=self.env(), capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"jupyterhub token {user}: {out.stderr[-2000:]}")
        return out.stdout.strip().splitlines()[-1]

    def stop(self, token: str, users: list[str]) -> None:
        """Servers, the hub (and with it its proxy), then leftover units; never raises."""
        if self.proc is None:
            return
        if self.proc.poll() is None and token:
            stop_servers(self.base, token, users)
        end(self.proc)
        # systemdspawner's default unit_name_template.
        for name in users:
            subprocess.run(["systemctl", "stop", f"jupyter-{name}-singleuser"],
                           capture_output=True)


class OurHub:
    """`notebook-appliance serve` with a throwaway config, PAM service and state."""

    def __init__(self, workdir: Path, admin_group: str, extra_toml: str = ""):
        self.workdir = workdir
        self.pam = f"notebook-appliance-test-{secrets.token_hex(4)}"
        self.runtime = Path("/run") / f"notebook-appliance-test-{secrets.token_hex(4)}"
        (self.port,) = free_ports(1)
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "appliance.toml"
        self.config.write_text(f"""[hub]
listen = "127.0.0.1"
port = {self.port}
state_dir = "{workdir / 'state'}"
runtime_dir = "{self.runtime}"
[auth]
pam_service = "{self.pam}"
admin_group = "{admin_group}"
[limits]
memory = "768M"
cpu = 0.5
tasks = 200
{extra_toml}""")
        self.config.chmod(0o600)  # it may hold a service's api_token
        self.log = workdir / "hub.log"
        self.proc: subprocess.Popen | None = None

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """The real `notebook-appliance` command against this config."""
        return subprocess.run([sys.executable, "-m", "appliance", "--config",
                               str(self.config), *args], capture_output=True, text=True,
                              timeout=60)

    def token(self, user: str) -> str:
        """`notebook-appliance token USER`."""
        out = self.cli("token", user)
        if out.returncode != 0:
            raise RuntimeError(f"notebook-appliance token {user}: {out.stderr[-2000:]}")
        return out.stdout.strip()

    def start(self) -> None:
        """Check the config (a refusal names the key), serve, wait for GET /hub/api/."""
        check = self.cli("check-config")
        if check.returncode != 0:
            raise RuntimeError(f"our hub refuses its config:\n{check.stderr.strip()}")
        shutil.copy(REPO / "etc/pam.d/notebook-appliance", f"/etc/pam.d/{self.pam}")
        with self.log.open("w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "appliance", "--config",
                                          str(self.config), "serve"], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_answering(f"{self.base}/hub/api/", self.proc, self.log)

    def stop(self, token: str, users: list[str]) -> None:
        """Servers (they outlive the hub by design), the hub, its files; never raises."""
        if self.proc is not None:
            if self.proc.poll() is None and token:
                stop_servers(self.base, token, users)
            end(self.proc)
        for name in users:
            subprocess.run(["systemctl", "stop", units.unit_name(name)], capture_output=True)
        Path(f"/etc/pam.d/{self.pam}").unlink(missing_ok=True)
        shutil.rmtree(self.runtime, ignore_errors=True)
