"""Fixtures for the VM tier: the built .deb, a booted qemu VM, people at browsers on the host.

This tier runs ON THE HOST (tests/run runs it after the container tier), as root: it builds a
Debian 12 VM image (tests/vm/image.sh, cached), boots it under qemu and drives it through
forwarded loopback ports. Inside the booted-systemd container it is skipped.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.system.client import Loop
from tests.vm.vm import VM, build_image

REPO = Path(__file__).resolve().parents[2]


def vm_tier_missing() -> str | None:
    """Why this machine cannot run the VM tier, or None when it can."""
    if os.environ.get("APPLIANCE_BOOTED_SYSTEMD") == "1":
        return "runs on the host against a qemu VM (tests/run runs it after this tier)"
    if os.geteuid() != 0:
        return "needs root to build the VM image; run tests/run"
    for tool in ("qemu-system-x86_64", "qemu-img", "ssh", "scp", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is missing; run 'make deps'"
    return None


def pytest_collection_modifyitems(config, items):
    """Skip this directory's tests, with the reason, where the VM tier cannot run."""
    why = vm_tier_missing()
    if why:
        here = Path(__file__).parent
        for item in items:
            if here in Path(item.fspath).parents:
                item.add_marker(pytest.mark.skip(reason=why))


def changelog_version(src: Path) -> str:
    """The package version at the top of debian/changelog."""
    first = (src / "debian/changelog").read_text().splitlines()[0]
    match = re.match(r"\S+ \(([^)]+)\)", first)
    assert match, f"cannot read a version from debian/changelog: {first!r}"
    return match.group(1)


def deb_path(src: Path) -> Path:
    """Where `make deb` puts the package built from src."""
    version = changelog_version(src).split(":")[-1]
    return src / "build" / f"notebook-appliance_{version}_all.deb"


def make_deb(src: Path) -> Path:
    """Build the .deb from a source tree with the project's own `make deb`."""
    subprocess.run(["make", "-C", str(src), "deb"], check=True)
    deb = deb_path(src)
    assert deb.is_file(), f"make deb did not produce {deb}"
    return deb


@pytest.fixture(scope="session")
def deb() -> Path:
    """The package under test: $APPLIANCE_DEB, or built now from this checkout."""
    if os.environ.get("APPLIANCE_DEB"):
        return Path(os.environ["APPLIANCE_DEB"]).resolve()
    return make_deb(REPO)


@pytest.fixture(scope="session")
def upgrade_deb(deb, tmp_path_factory) -> Path:
    """$APPLIANCE_UPGRADE_DEB, or this source with a higher version, built in a copy."""
    if os.environ.get("APPLIANCE_UPGRADE_DEB"):
        return Path(os.environ["APPLIANCE_UPGRADE_DEB"]).resolve()
    src = tmp_path_factory.mktemp("upgrade") / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", "build", ".pytest_cache",
                                                             "__pycache__"))
    changelog = src / "debian/changelog"
    old = changelog.read_text()
    version = changelog_version(src)
    new = bump(version)
    maintainer = re.search(r"^ -- (.+?>)", old, re.M).group(1)
    date = subprocess.run(["date", "-R"], capture_output=True, text=True).stdout.strip()
    changelog.write_text(
        f"notebook-appliance ({new}) bookworm; urgency=medium\n\n"
        f"  * System test: an upgrade.\n\n -- {maintainer}  {date}\n\n" + old)
    return make_deb(src)


def bump(version: str) -> str:
    """A Debian version sorting just above `version` ('0.1.0-1' -> '0.1.0-1+systest1')."""
    return version + "+systest1"


@pytest.fixture(scope="session")
def vm_image() -> Path:
    """The cached VM image (tests/vm/image.sh)."""
    return build_image()


@pytest.fixture(scope="module")
def vm(vm_image):
    """One booted VM for the whole module; qemu is killed and the overlay removed after."""
    with VM(vm_image) as machine:
        yield machine


@pytest.fixture(scope="module")
def loop():
    """The module's event loop for the synchronous browser clients."""
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def state():
    """What earlier ordered steps established, for the later ones."""
    return {}

