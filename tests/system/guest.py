"""The guest as the VM tier's modules drive it: the installed hub's unit, waiting, a URL
fetched inside the guest, PyPI venvs copied in, a step's prerequisites."""

import subprocess
import time
from pathlib import Path

import pytest

CONFIG = "/etc/notebook-appliance/appliance.toml"
HUB = "notebook-appliance"


def need(state: dict, *steps: str) -> None:
    """Skip unless every named earlier step succeeded."""
    for step in steps:
        if not state.get(step):
            pytest.skip(f"needs the earlier step {step!r}, which did not succeed")


def is_active(vm, unit: str) -> str:
    """What `systemctl is-active` says about a unit in the VM."""
    return vm.ssh(f"systemctl is-active {unit}", check=False).stdout.strip()


def wait_for(what: str, check, timeout: float = 120, every: float = 2):
    """Poll check() until it returns something true; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def fetch_in_vm(url: str) -> str:
    """A shell command that GETs url inside the VM and prints its status and body."""
    return ("python3 -c 'import sys, urllib.request, urllib.error\n"
            "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=10)\n"
            "except urllib.error.HTTPError as e:\n r = e\n"
            "except OSError:\n print(0); sys.exit()\n"
            f"print(r.status); print(r.read().decode())' {url}")


def pypi_venv(vm, name: str, tmp_path: Path) -> Path:
    """A venv of the container tier's PyPI tools (tests/infra/pypi-tools.sh, built or reused
    with Debian 12's python3.11, the guest's too), copied into the guest at the same path."""
    out = subprocess.run([str(Path(__file__).parents[1] / "infra" / "pypi-tools.sh")],
                         stdout=subprocess.PIPE, text=True, check=True)
    venv = Path(out.stdout.strip().splitlines()[-1]) / name
    archive = tmp_path / f"{name}.tar.gz"
    subprocess.run(["tar", "-C", "/", "-czf", str(archive), str(venv).lstrip("/")], check=True)
    vm.copy_in(archive, f"/root/{archive.name}")
    vm.ssh(f"tar -C / -xzf /root/{archive.name} && rm /root/{archive.name}")
    return venv
